//! Preempted tasks that migrate (`migrate_preempted(true)`): the signal
//! frame on the task's stack is returned from on another thread, so the
//! handler must rewrite the saved `uc_stack` (the alternate signal stack that
//! `sigreturn` reinstalls) with the *current* thread's. If it did not, two
//! workers would end up sharing one alternate stack. This test watches every
//! worker's alternate stack while hogs are preempted and moved around.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::join_ok;

/// This thread's alternate signal stack base (0 if none).
fn altstack() -> usize {
    // SAFETY: querying the current altstack into a zeroed stack_t.
    unsafe {
        let mut cur: libc::stack_t = std::mem::zeroed();
        assert_eq!(libc::sigaltstack(std::ptr::null(), &mut cur), 0);
        cur.ss_sp as usize
    }
}

#[test]
fn migrated_preempted_tasks_keep_each_threads_altstack() {
    let rt = kvant::Runtime::builder()
        .workers(2)
        .quantum(Some(Duration::from_micros(200)))
        .migrate_preempted(true)
        .build()
        .unwrap();
    let seen: Arc<Mutex<HashMap<std::thread::ThreadId, usize>>> = Arc::default();
    let migrations = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // Staggered ends: as hogs finish, a worker runs dry and steals preempted
    // hogs from the other one, so preempted tasks really change threads. How
    // often that happens depends on where the hogs land, so rounds repeat
    // (up to 20, each about 0.4 s) until one has migrated a preempted task.
    for _round in 0..20 {
        if migrations.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            break;
        }
        let start = Instant::now();
        let hogs: Vec<_> = (0..6u64)
            .map(|i| {
                let end = start + Duration::from_millis(60 * (i + 1));
                let (seen, migrations) = (seen.clone(), migrations.clone());
                rt.spawn(move || {
                    let mut last = std::thread::current().id();
                    let mut x = 1u64;
                    while Instant::now() < end {
                        for _ in 0..20_000 {
                            x = std::hint::black_box(
                                x.wrapping_mul(6364136223846793005).wrapping_add(1),
                            );
                        }
                        let me = std::thread::current().id();
                        if me != last {
                            // Only preemption switches this task: it moved while preempted.
                            migrations.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            last = me;
                        }
                        let ss = altstack();
                        // A std lock held across a preemption could deadlock the
                        // worker (docs/safety.md): keep this section unpreemptible.
                        let _no_preempt = kvant::preempt::disable();
                        let mut seen = seen.lock().unwrap();
                        let first = *seen.entry(me).or_insert(ss);
                        assert_eq!(
                            first, ss,
                            "a worker's alternate signal stack changed under it"
                        );
                    }
                    x
                })
            })
            .collect();
        for h in hogs {
            join_ok(h);
        }
    }
    let seen = seen.lock().unwrap();
    let stacks: std::collections::HashSet<usize> = seen.values().copied().collect();
    eprintln!(
        "threads {}, distinct altstacks {}, migrations {}, {:?}",
        seen.len(),
        stacks.len(),
        migrations.load(std::sync::atomic::Ordering::Relaxed),
        rt.metrics().total()
    );
    assert_eq!(
        stacks.len(),
        seen.len(),
        "two workers share an alternate stack"
    );
    assert!(rt.metrics().total().preemptions > 0);
    assert!(
        migrations.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "no preempted task migrated: the test did not exercise the uc_stack repair"
    );
}
