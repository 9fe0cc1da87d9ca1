//! `spawn_blocking`: a bounded pool of OS threads for work that blocks in the
//! kernel (file I/O, `std::thread::sleep`, a C library call).
//!
//! A blocking call inside a task blocks its whole worker: every task queued
//! there waits (with preemption on, the signal cannot help, since the task
//! sits in a syscall and is deferred). Such work belongs on its own thread.
//! Threads are started on demand up to the cap, and exit after idling for a
//! while, so a runtime that never blocks never pays for them.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::Shared;
use crate::error::Error;
use crate::task::JoinHandle;
use crate::task::current::CancelUnwind;
use crate::task::join::{BlockingCell, Handle, Packet};
use crate::task::join_error::Failure;

/// How long an idle blocking thread waits for more work before exiting.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

type Job = Box<dyn FnOnce() + Send + 'static>;

struct State {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
    stop: bool,
}

pub(crate) struct BlockingPool {
    state: Mutex<State>,
    cond: Condvar,
    cap: usize,
    name: String,
}

impl BlockingPool {
    pub(crate) fn new(cap: usize, name: &str) -> Arc<Self> {
        Arc::new(BlockingPool {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                threads: 0,
                idle: 0,
                stop: false,
            }),
            cond: Condvar::new(),
            cap,
            name: format!("{name}-blocking"),
        })
    }

    fn submit(self: &Arc<Self>, job: Job) -> Result<(), Error> {
        let mut st = self.state.lock();
        if st.stop {
            return Err(Error::Shutdown);
        }
        st.queue.push_back(job);
        if st.idle > 0 {
            self.cond.notify_one();
        } else if st.threads < self.cap {
            st.threads += 1;
            let pool = self.clone();
            let spawned = std::thread::Builder::new()
                .name(self.name.clone())
                .spawn(move || pool.run());
            if let Err(e) = spawned {
                st.threads -= 1;
                if st.threads == 0 {
                    st.queue.pop_back();
                    return Err(e.into());
                }
                // Others will get to it.
            }
        }
        Ok(())
    }

    fn run(&self) {
        let mut st = self.state.lock();
        loop {
            if let Some(job) = st.queue.pop_front() {
                drop(st);
                job();
                st = self.state.lock();
                continue;
            }
            if st.stop {
                break;
            }
            st.idle += 1;
            let timed_out = self.cond.wait_for(&mut st, KEEP_ALIVE).timed_out();
            st.idle -= 1;
            if timed_out && st.queue.is_empty() {
                break;
            }
        }
        st.threads -= 1;
        self.cond.notify_all();
    }

    /// Refuse new work and let queued jobs finish (bounded wait).
    pub(crate) fn stop(&self, deadline: std::time::Instant) {
        let mut st = self.state.lock();
        st.stop = true;
        self.cond.notify_all();
        while st.threads > 0 {
            if self.cond.wait_until(&mut st, deadline).timed_out() {
                break;
            }
        }
    }
}

impl Shared {
    pub(crate) fn spawn_blocking<F, T>(self: &Arc<Self>, f: F) -> Result<JoinHandle<T>, Error>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let packet = Arc::new(BlockingCell {
            id: crate::task::Header::new_id(),
            packet: Packet::<T>::new(None),
        });
        let result = packet.clone();
        // The work may spawn (`kvant::spawn`, `Handle::current`): it runs
        // inside this runtime. Weak: the pool must not keep it alive.
        let rt = Arc::downgrade(self);
        self.blocking.submit(Box::new(move || {
            let _entered = rt.upgrade().map(super::context::enter_runtime);
            let r = catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
                if p.is::<CancelUnwind>() {
                    Failure::Cancelled
                } else {
                    Failure::Panic(crate::task::join_error::Payload::new(p))
                }
            });
            result.packet.complete(r, result.owner());
        }))?;
        Ok(JoinHandle {
            inner: Handle::Blocking(packet),
        })
    }
}

/// Run blocking work `f` on the runtime's pool of OS threads and return a
/// handle to join (inside a task, joining parks only the green thread).
///
/// # Panics
/// Outside a kvant runtime, or after it shut down.
pub fn spawn_blocking<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let shared = Shared::current().unwrap_or_else(|| {
        panic!("kvant::spawn_blocking called outside a kvant runtime; use Runtime::spawn_blocking")
    });
    shared
        .spawn_blocking(f)
        .unwrap_or_else(|e| panic!("kvant::spawn_blocking failed: {e}"))
}
