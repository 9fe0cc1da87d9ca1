//! Task dumps: every live task, what it waits on, for how long, and where.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kvant::Runtime;
use kvant::dump::{Status, WaitingOn};
use kvant::sync::{Barrier, Mutex};

mod common;
use common::{HANG, wait_for};

/// The line of this file that carries `marker` (where a task below waits).
fn line_of(marker: &str) -> u32 {
    let at = include_str!("dump.rs")
        .lines()
        .position(|l| l.trim_end().ends_with(&format!("// {marker}")))
        .expect("marker line");
    at as u32 + 1
}

/// Two tasks deadlock on two kvant Mutexes (each holds one and waits for
/// the other). The dump names both tasks, the lock each waits for (the
/// one the other holds), and the line in this file where each waits. (The
/// two bodies differ: identical ones would be folded into one function by
/// the optimizer, and one address has one line.)
#[test]
fn a_dump_names_both_deadlocked_tasks_their_locks_and_call_sites() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let (m1, m2) = (Arc::new(Mutex::new(1)), Arc::new(Mutex::new(2)));
    let met = Arc::new(Barrier::new(2));
    let alpha = {
        let (m1, m2, met) = (m1.clone(), m2.clone(), met.clone());
        kvant::task::Builder::new()
            .name("alpha")
            .spawn_on(&rt, move || {
                let a = m1.lock();
                met.wait();
                *a + *m2.lock() // ALPHA_WAITS
            })
            .unwrap()
    };
    let beta = {
        let (m1, m2, met) = (m1.clone(), m2.clone(), met.clone());
        kvant::task::Builder::new()
            .name("beta")
            .spawn_on(&rt, move || {
                let _b = m2.lock();
                met.wait();
                let _a = m1.lock(); // BETA_WAITS
            })
            .unwrap()
    };
    let parked_on = |dump: &kvant::dump::TaskDump, id| {
        dump.task(id).and_then(|t| match t.status {
            Status::Parked(on) => Some(on),
            _ => None,
        })
    };
    let (a, b) = (alpha.id(), beta.id());
    wait_for("both tasks to wait for a lock", || {
        let d = rt.dump();
        matches!(parked_on(&d, a), Some(WaitingOn::Mutex(_)))
            && matches!(parked_on(&d, b), Some(WaitingOn::Mutex(_)))
    });
    std::thread::sleep(Duration::from_millis(20));
    let dump = rt.dump();
    let text = dump.to_string();
    println!("{text}");
    // Each waits for the lock the other holds: two different locks.
    let (Some(WaitingOn::Mutex(la)), Some(WaitingOn::Mutex(lb))) =
        (parked_on(&dump, a), parked_on(&dump, b))
    else {
        panic!("not both parked on a Mutex:\n{text}");
    };
    assert_ne!(la, lb, "{text}");
    for (id, name, line, lock) in [
        (a, "alpha", line_of("ALPHA_WAITS"), la),
        (b, "beta", line_of("BETA_WAITS"), lb),
    ] {
        let t = dump.task(id).unwrap();
        assert_eq!(t.name.as_deref(), Some(name));
        assert!(
            t.since.is_some_and(|s| s >= Duration::from_millis(20)),
            "{name} parked for {:?}\n{text}",
            t.since
        );
        let site = t
            .stack
            .iter()
            .find(|f| {
                f.file
                    .as_deref()
                    .is_some_and(|f| f.ends_with("tests/dump.rs"))
            })
            .unwrap_or_else(|| panic!("no frame of tests/dump.rs for {name}:\n{text}"));
        assert_eq!(site.line, Some(line), "{name}'s call site\n{text}");
        assert!(
            t.stack
                .iter()
                .any(|f| f.function.as_deref().is_some_and(|n| n.contains("lock"))),
            "{name}'s stack shows no lock call\n{text}"
        );
        let header = format!("task {id} \"{name}\" [parked: Mutex lock {lock:#x}");
        assert!(text.contains(&header), "missing {header:?} in\n{text}");
    }
    // Aborting alpha unwinds it out of its wait and frees m1: beta may then
    // finish before its own abort lands.
    alpha.abort_handle().abort();
    match alpha.join_timeout(HANG) {
        Ok(Err(e)) => assert!(e.is_aborted(), "{e}"),
        _ => panic!("alpha did not end as aborted"),
    }
    beta.abort_handle().abort();
    match beta.join_timeout(HANG) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => assert!(e.is_aborted(), "{e}"),
        Err(_) => panic!("beta did not end"),
    }
}

/// Computes until told to stop, in small rounds with no switch point.
#[inline(never)]
fn hog(stop: &AtomicBool) -> u64 {
    let mut x = 0;
    while !stop.load(Ordering::Relaxed) {
        x ^= common::burn(x, 10_000);
    }
    x
}

/// One worker, two hogs at a 1 ms quantum, a sleeper and a joiner: the
/// dump shows one hog running, the other preempted with its stack in
/// `hog`, the sleeper parked in a sleep for as long as it has slept, and
/// the joiner parked on the join of the sleeper.
#[test]
fn a_dump_tells_running_preempted_sleeping_and_joining_tasks_apart() {
    let rt = Runtime::builder()
        .workers(1)
        .quantum(Some(Duration::from_millis(1)))
        .build()
        .unwrap();
    assert!(
        rt.preemption_mode().is_preemptive(),
        "{:?}",
        rt.preemption_mode()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..2)
        .map(|i| {
            let stop = stop.clone();
            kvant::task::Builder::new()
                .name(format!("hog{i}"))
                .spawn_on(&rt, move || hog(&stop))
                .unwrap()
        })
        .collect();
    let sleeper = kvant::task::Builder::new()
        .name("sleeper")
        .spawn_on(&rt, || kvant::sleep(HANG))
        .unwrap();
    let sleeper_id = sleeper.id();
    let joiner = kvant::task::Builder::new()
        .name("joiner")
        .spawn_on(&rt, move || sleeper.join().is_err())
        .unwrap();
    let mut seen = None;
    wait_for("a hog preempted, a sleeper and a joiner parked", || {
        let d = rt.dump();
        let preempted = d.tasks().iter().any(|t| {
            t.status == Status::Preempted
                && t.since.is_some()
                && t.stack.iter().any(|f| {
                    f.function
                        .as_deref()
                        .is_some_and(|n| n.ends_with("dump::hog"))
                })
        });
        let running = d
            .tasks()
            .iter()
            .any(|t| t.status == (Status::Running { worker: 0 }) && t.since.is_some());
        let sleeping = d
            .task(sleeper_id)
            .is_some_and(|t| t.status == Status::Parked(WaitingOn::Sleep) && t.since.is_some());
        let joining = d
            .task(joiner.id())
            .is_some_and(|t| t.status == Status::Parked(WaitingOn::Join(sleeper_id)));
        let ok = preempted && running && sleeping && joining;
        seen = Some(d);
        ok
    });
    let text = seen.unwrap().to_string();
    println!("{text}");
    assert!(text.contains("[preempted"), "{text}");
    assert!(text.contains("[running on worker 0"), "{text}");
    assert!(text.contains("[parked: sleep, "), "{text}");
    assert!(
        text.contains(&format!("[parked: join of task {sleeper_id}")),
        "{text}"
    );
    stop.store(true, Ordering::Relaxed);
    for h in hogs {
        common::join_ok(h);
    }
    joiner.abort_handle().abort();
    let _ = joiner.join_timeout(HANG).expect("the aborted joiner ended");
}

/// `dump_on_signal`: the signal makes the runtime hand its dump to the
/// diagnostic hook, and the program goes on.
#[test]
fn a_signal_prints_the_dump_and_the_program_goes_on() {
    let dumps = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let rt = {
        let dumps = dumps.clone();
        Runtime::builder()
            .workers(1)
            .dump_on_signal(libc::SIGUSR2)
            .on_diagnostic(move |d| {
                if d.kind() == kvant::DiagnosticKind::TaskDump {
                    dumps.lock().unwrap().push(d.message().to_string());
                }
            })
            .build()
            .unwrap()
    };
    let (tx, rx) = kvant::channel::bounded::<u32>(0);
    let h = kvant::task::Builder::new()
        .name("listener")
        .spawn_on(&rt, move || rx.recv().unwrap())
        .unwrap();
    wait_for("the listener to park", || {
        rt.dump()
            .task(h.id())
            .is_some_and(|t| matches!(t.status, Status::Parked(WaitingOn::Recv(_))))
    });
    // SAFETY: raise has no preconditions; the runtime installed a handler.
    assert_eq!(unsafe { libc::raise(libc::SIGUSR2) }, 0);
    wait_for("the dump to arrive", || !dumps.lock().unwrap().is_empty());
    let dump = dumps.lock().unwrap()[0].clone();
    assert!(dump.starts_with("kvant task dump:"), "{dump}");
    assert!(
        dump.contains("\"listener\" [parked: channel receive"),
        "{dump}"
    );
    tx.send(7).unwrap();
    assert_eq!(common::join_ok(h), 7);
    // The signal number is checked at build.
    let e = Runtime::builder()
        .dump_on_signal(libc::SIGSEGV)
        .build()
        .unwrap_err();
    assert!(matches!(e, kvant::Error::InvalidSignal(_)), "{e}");
}

/// Sleeps its OS thread in rounds until told to stop: blocks its worker in
/// the kernel.
#[inline(never)]
fn block_in_kernel(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A task that blocks its worker's thread in the kernel is listed as such,
/// with how long and with the stack it blocks on (from the system call's
/// stack pointer), down to this file.
#[test]
fn a_task_blocked_in_the_kernel_is_listed_with_where_it_blocks() {
    let rt = Runtime::builder()
        .workers(1)
        .blocking_threshold(Duration::from_millis(1))
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let h = {
        let stop = stop.clone();
        kvant::task::Builder::new()
            .name("sleepy")
            .spawn_on(&rt, move || block_in_kernel(&stop))
            .unwrap()
    };
    let mut seen = None;
    wait_for("the task to show as blocked in the kernel", || {
        let d = rt.dump();
        let ok = d.task(h.id()).is_some_and(|t| {
            matches!(t.status, Status::BlockedInKernel { worker: 0 })
                && t.since.is_some()
                && t.stack.iter().any(|f| {
                    f.function
                        .as_deref()
                        .is_some_and(|n| n.ends_with("block_in_kernel"))
                })
        });
        seen = Some(d);
        ok
    });
    let text = seen.unwrap().to_string();
    assert!(
        text.contains("\"sleepy\" [blocked in the kernel on worker 0"),
        "{text}"
    );
    stop.store(true, Ordering::Relaxed);
    common::join_ok(h);
}

/// A task can dump its own runtime (through `Handle::current()`): it lists
/// itself as running, and the others as they are.
#[test]
fn a_task_dumps_its_own_runtime() {
    let rt = Runtime::builder().workers(2).build().unwrap();
    let (tx, rx) = kvant::channel::bounded::<()>(0);
    let waiter = kvant::task::Builder::new()
        .name("waiter")
        .spawn_on(&rt, move || rx.recv().unwrap())
        .unwrap();
    let waiter_id = waiter.id();
    let dumper = kvant::task::Builder::new()
        .name("dumper")
        .spawn_on(&rt, move || {
            let handle = kvant::Handle::current();
            let mut tries = 0;
            loop {
                let d = handle.dump();
                let me = kvant::current().id();
                let running = d
                    .task(me)
                    .is_some_and(|t| matches!(t.status, Status::Running { .. }));
                let parked = d
                    .task(waiter_id)
                    .is_some_and(|t| matches!(t.status, Status::Parked(WaitingOn::Recv(_))));
                if running && parked {
                    return d.to_string();
                }
                tries += 1;
                assert!(tries < 10_000, "never saw both:\n{d}");
                kvant::sleep(Duration::from_millis(1));
            }
        })
        .unwrap();
    let text = common::join_ok(dumper);
    assert!(text.contains("\"dumper\" [running on worker"), "{text}");
    tx.send(()).unwrap();
    common::join_ok(waiter);
}
