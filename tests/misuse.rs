//! API misuse is a typed error or a clear panic, never a hang: calls that
//! need a runtime outside one, a task joining itself, a preemption signal
//! the program already handles. (Split from `tests/reliability.rs`.)

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvant::{Error, JoinHandle, Runtime};

mod common;
use common::{HANG, join_ok, panic_message, rt as runtime, wait_for};

// ------------------------------------------------------------------ misuse

#[test]
fn calls_that_need_a_runtime_panic_clearly_outside_one() {
    type Call = fn();
    let calls: [(&str, Call); 4] = [
        ("kvant::spawn", || drop(kvant::spawn(|| 1))),
        ("kvant::current", || drop(kvant::current())),
        ("kvant::spawn_blocking", || {
            drop(kvant::spawn_blocking(|| 1))
        }),
        ("kvant::scope", || kvant::scope(|_| ())),
    ];
    for (name, call) in calls {
        let p = catch_unwind(call).expect_err(name);
        let msg = panic_message(p);
        let named = msg.contains(name) || msg.contains(name.trim_start_matches("kvant::"));
        assert!(
            named && msg.contains("outside a kvant"),
            "{name}: unclear message: {msg}"
        );
    }
    assert!(matches!(
        kvant::task::Builder::new().spawn(|| ()),
        Err(Error::NoRuntime)
    ));
}

#[test]
fn a_task_joining_itself_panics_instead_of_hanging() {
    let rt = runtime(2, Some(Duration::from_millis(1)));
    for timed in [false, true] {
        let slot: Arc<Mutex<Option<JoinHandle<()>>>> = Arc::new(Mutex::new(None));
        let (tx, rx) = std::sync::mpsc::channel();
        let mine = slot.clone();
        let h = rt.spawn(move || {
            let deadline = Instant::now() + HANG;
            let me = loop {
                if let Some(h) = mine.lock().unwrap().take() {
                    break h;
                }
                assert!(Instant::now() < deadline, "never got my handle");
                kvant::yield_now();
            };
            let r = catch_unwind(AssertUnwindSafe(|| {
                if timed {
                    drop(me.join_timeout(Duration::from_secs(1)));
                } else {
                    drop(me.join());
                }
            }));
            tx.send(r.map_err(panic_message)).unwrap();
        });
        *slot.lock().unwrap() = Some(h);
        let msg = rx
            .recv_timeout(HANG)
            .expect("the task reports back")
            .expect_err("joining yourself must panic");
        assert!(msg.contains("join itself"), "unclear message: {msg}");
    }
    wait_for("live_tasks == 0", || rt.metrics().live_tasks == 0);
}

extern "C" fn ignore_signal(_: libc::c_int) {}

#[test]
fn preempt_signal_with_a_handler_is_signal_in_use() {
    // SAFETY: installs a handler that does nothing for SIGUSR2, which no
    // other test in this binary uses; the sigaction struct is zeroed and
    // its mask initialised before use.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = ignore_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut()), 0);
    }
    let t = Instant::now();
    let err = Runtime::builder()
        .workers(2)
        .quantum(Some(Duration::from_millis(1)))
        .preempt_signal(libc::SIGUSR2)
        .build()
        .expect_err("SIGUSR2 has a handler");
    let took = t.elapsed();
    eprintln!("failed build took {took:?}");
    // A failed start must not wait for worker threads it never started
    // (it used to wait out the 500 ms STOP_GRACE for them).
    assert!(
        took < Duration::from_millis(500),
        "failed build took {took:?}"
    );
    assert!(
        matches!(err, Error::SignalInUse(s) if s == libc::SIGUSR2),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&libc::SIGUSR2.to_string()) && msg.contains("preempt_signal"),
        "unclear message: {msg}"
    );
    // A signal nobody handles works, and really preempts.
    let rt = Runtime::builder()
        .workers(1)
        .quantum(Some(Duration::from_millis(1)))
        .preempt_signal(libc::SIGUSR1)
        .build()
        .expect("SIGUSR1 is free");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            rt.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    wait_for("a preemption", || rt.metrics().total().preemptions > 0);
    stop.store(true, Ordering::Relaxed);
    for h in hogs {
        join_ok(h);
    }
}

#[test]
fn join_error_is_send_sync_and_converts_with_question_mark() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<kvant::JoinError>();
    fn run() -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
        let rt = kvant::Runtime::builder().workers(1).build()?;
        let v = rt.spawn(|| -> u32 { panic!("boom") }).join()?;
        Ok(v)
    }
    let e = run().unwrap_err();
    assert!(e.to_string().contains("panicked: boom"), "{e}");
}

#[test]
fn api_panics_point_at_the_callers_line() {
    thread_local! {
        static LOCATION: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
    }
    let prev = Arc::new(std::panic::take_hook());
    let p = prev.clone();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(l) = info.location() {
            LOCATION.with(|x| *x.borrow_mut() = Some(format!("{}:{}", l.file(), l.line())));
        }
        p(info);
    }));
    let line = line!() + 2;
    let r = catch_unwind(|| {
        kvant::spawn(|| ());
    });
    let _ = std::panic::take_hook(); // the previous hook stays reachable through `prev`
    assert!(r.is_err());
    let loc = LOCATION
        .with(|l| l.borrow_mut().take())
        .expect("the hook saw the panic");
    assert!(loc.ends_with(&format!("misuse.rs:{line}")), "{loc}");
}
