//! What kvant has to say about a program while it runs: a blocking call
//! that holds a worker, a stall, a slice that overran its quantum where
//! kvant will not preempt, preemption being off in this build. Each is one
//! [`Diagnostic`], given to the hook set with
//! [`Builder::on_diagnostic`](crate::Builder::on_diagnostic). Without a
//! hook it is printed on stderr as one line, or, with the `log` feature,
//! sent to the `log` crate (target `kvant`, level `warn`). Hook and sink run
//! on one `kvant-diagnostics` thread, in order: never on the monitor, which
//! must not wait for a lock a task may hold.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};

/// What a [`Diagnostic`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DiagnosticKind {
    /// A quantum was asked for but this executable cannot be preempted
    /// soundly (no line tables, stripped): tasks run cooperatively. Said
    /// once per process, with the Cargo setting that fixes it.
    PreemptionOff,
    /// The preemption signal already has a handler in this program.
    SignalInUse,
    /// A task blocked its worker's thread in the kernel while other tasks
    /// waited (once per task and call site).
    BlockingCall,
    /// Tasks preempted on a blocked thread cannot run anywhere else until
    /// it returns, or every worker and compensating thread is blocked.
    Stall,
    /// A slice ran far past its quantum in code kvant does not preempt
    /// (once per place).
    Overrun,
    /// kvant could not start a helper thread it wanted.
    ThreadStart,
    /// A fault inside kvant that it survived.
    Internal,
    /// A task dump asked for with `Builder::dump_on_signal`: the message is
    /// the whole dump, many lines.
    TaskDump,
}

/// One diagnostic: what it is about and its message (one line, starting
/// with `kvant:`, as printed on stderr).
#[derive(Clone, Debug)]
pub struct Diagnostic {
    kind: DiagnosticKind,
    message: String,
}

impl Diagnostic {
    pub(crate) fn new(kind: DiagnosticKind, message: String) -> Self {
        Diagnostic { kind, message }
    }

    /// What it is about.
    pub fn kind(&self) -> DiagnosticKind {
        self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The hook a runtime gives its diagnostics to.
#[derive(Clone)]
pub(crate) struct DiagnosticHook(pub Arc<dyn Fn(&Diagnostic) + Send + Sync>);

impl fmt::Debug for DiagnosticHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DiagnosticHook")
    }
}

/// Say `message` through `hook`, or the default sink, on kvant's
/// diagnostics thread: the monitor says most of these, and must never wait
/// for what a task may hold (std's stderr lock, a logger's lock) while the
/// task may be waiting for the monitor (to lend its worker back). Lines
/// keep their order; [`flush`] waits for them at shutdown.
pub(crate) fn say(hook: Option<&DiagnosticHook>, kind: DiagnosticKind, message: String) {
    let job = (hook.cloned(), Diagnostic::new(kind, message));
    SENT.fetch_add(1, Ordering::AcqRel);
    let undelivered = match PRINTER.get_or_init(start_printer) {
        Some(tx) => tx.send(job).err().map(|e| e.0),
        None => Some(job),
    };
    if let Some((hook, d)) = undelivered {
        // No diagnostics thread: say it here after all.
        deliver(hook.as_ref(), &d);
        DONE.fetch_add(1, Ordering::AcqRel);
    }
}

type Job = (Option<DiagnosticHook>, Diagnostic);

static PRINTER: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
static SENT: AtomicU64 = AtomicU64::new(0);
static DONE: AtomicU64 = AtomicU64::new(0);

fn start_printer() -> Option<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("kvant-diagnostics".into())
        .spawn(move || {
            for (hook, d) in rx {
                deliver(hook.as_ref(), &d);
                DONE.fetch_add(1, Ordering::AcqRel);
            }
        })
        .ok()
        .map(|_| tx)
}

/// Wait (until `deadline`) for every diagnostic said so far to be
/// delivered: a runtime shutting down does not leave its last lines unsaid.
pub(crate) fn flush(deadline: std::time::Instant) {
    let target = SENT.load(Ordering::Acquire);
    while DONE.load(Ordering::Acquire) < target && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Give `d` to `hook` or the default sink. A panicking hook is contained.
fn deliver(hook: Option<&DiagnosticHook>, d: &Diagnostic) {
    match hook {
        Some(h) => {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (h.0)(d)));
        }
        None => default_sink(d),
    }
}

#[cfg(feature = "log")]
fn default_sink(d: &Diagnostic) {
    log::warn!(target: "kvant", "{}", d.message);
}

/// Through std's stderr lock, so a line never lands inside a line a task is
/// writing while it holds that lock.
#[cfg(not(feature = "log"))]
fn default_sink(d: &Diagnostic) {
    eprintln!("{}", d.message);
}
