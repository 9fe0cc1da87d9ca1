//! What kvant has to say about a program while it runs: a blocking call
//! that holds a worker, a stall, a slice that overran its quantum where
//! kvant will not preempt, preemption being off in this build. Each is one
//! [`Diagnostic`], given to the hook set with
//! [`Builder::on_diagnostic`](crate::Builder::on_diagnostic). Without a
//! hook it is written to stderr as one line (one `write(2)`, never through
//! std's stderr lock, which a task may hold), or, with the `log` feature,
//! sent to the `log` crate (target `kvant`, level `warn`; the logger then
//! must not wait for std's stderr lock either: a task may hold it while it
//! waits for the monitor that is logging).

use std::fmt;
use std::sync::Arc;

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

/// Say `message` through `hook`, or the default sink. A panicking hook is
/// contained: a diagnostic must not take a worker or the monitor down.
pub(crate) fn say(hook: Option<&DiagnosticHook>, kind: DiagnosticKind, message: String) {
    let d = Diagnostic::new(kind, message);
    match hook {
        Some(h) => {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (h.0)(&d)));
        }
        None => default_sink(&d),
    }
}

#[cfg(feature = "log")]
fn default_sink(d: &Diagnostic) {
    log::warn!(target: "kvant", "{}", d.message);
}

/// One `write(2)` of the whole line, not `eprintln!`: std's stderr lock
/// belongs to whichever thread holds it, and a task may hold it while it
/// waits for the very thread that is saying this (the monitor, which may be
/// about to lend that task's worker back). A line of up to 4 KiB is written
/// whole even into a pipe.
#[cfg(not(feature = "log"))]
fn default_sink(d: &Diagnostic) {
    let mut line = Vec::with_capacity(d.message.len() + 1);
    line.extend_from_slice(d.message.as_bytes());
    line.push(b'\n');
    let mut rest = &line[..];
    while !rest.is_empty() {
        // SAFETY: writing initialised bytes from a live buffer to fd 2.
        let n = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return; // stderr is gone: nothing to say it on
        }
        rest = &rest[n as usize..];
    }
}
