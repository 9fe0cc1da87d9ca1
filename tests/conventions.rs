//! What users of std, rayon and tokio expect: the runtime reachable from
//! context, worker hooks and affinity, panics that name the task.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{join_ok, rt};
use kvant::Handle;

#[test]
fn handle_current_inside_tasks_blocking_work_and_enter() {
    let rt = rt(2, None);
    assert!(Handle::try_current().is_none());
    let h = rt.block_on(Handle::current);
    assert_eq!(h.spawn(|| 1).join().unwrap(), 1);
    // spawn_blocking work runs inside the runtime: kvant::spawn works there.
    let v = rt
        .spawn_blocking(|| kvant::spawn(|| 2).join().unwrap())
        .join()
        .unwrap();
    assert_eq!(v, 2);
    {
        let _g = rt.enter();
        assert_eq!(kvant::spawn(|| 3).join().unwrap(), 3);
        assert!(Handle::try_current().is_some());
        let mut set = kvant::JoinSet::new();
        set.spawn(|| 4);
        assert_eq!(set.join_next().unwrap().unwrap(), 4);
    }
    assert!(Handle::try_current().is_none());
    // Handle::spawn_blocking and block_on.
    let h = rt.handle();
    assert_eq!(h.spawn_blocking(|| 5).join().unwrap(), 5);
    assert_eq!(h.block_on(|| 6), 6);
    assert_eq!(
        kvant::task::Builder::new()
            .name("via-handle")
            .spawn_on(&h, || 7)
            .unwrap()
            .join()
            .unwrap(),
        7
    );
}

#[test]
fn worker_hooks_run_once_per_worker() {
    let (start, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (s1, s2) = (start.clone(), stop.clone());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let rt = kvant::Runtime::builder()
        .workers(3)
        .on_worker_start(move |i| {
            s1.fetch_add(1, Ordering::SeqCst);
            seen2.lock().unwrap().push(i);
        })
        .on_worker_stop(move |_| {
            s2.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    join_ok(rt.spawn(|| ()));
    drop(rt);
    assert_eq!(start.load(Ordering::SeqCst), 3);
    assert_eq!(stop.load(Ordering::SeqCst), 3);
    let mut s = seen.lock().unwrap().clone();
    s.sort_unstable();
    assert_eq!(s, [0, 1, 2]);
}

#[test]
fn worker_affinity_pins_each_worker_to_one_cpu() {
    fn cpus_of_this_thread() -> usize {
        // SAFETY: a zeroed cpu_set_t is valid; the kernel fills at most its size.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            assert_eq!(
                libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
                0
            );
            libc::CPU_COUNT(&set) as usize
        }
    }
    let counts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let c = counts.clone();
    let rt = kvant::Runtime::builder()
        .workers(2)
        .worker_affinity(true)
        .on_worker_start(move |_| c.lock().unwrap().push(cpus_of_this_thread()))
        .build()
        .unwrap();
    join_ok(rt.spawn(|| ()));
    drop(rt);
    assert_eq!(*counts.lock().unwrap(), [1, 1]);
}

#[test]
fn a_task_panic_names_the_task() {
    if std::env::var_os("KVANT_CONVENTIONS_CHILD").is_some() {
        let rt = rt(1, None);
        let h = kvant::task::Builder::new()
            .name("the-culprit")
            .spawn_on(&rt, || panic!("boom"))
            .unwrap();
        let _ = h.join();
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_task_panic_names_the_task", "--nocapture"])
        .env("KVANT_CONVENTIONS_CHILD", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("boom")
            && stderr.contains("note: the panic is in kvant task #")
            && stderr.contains("'the-culprit'"),
        "{stderr}"
    );
}
