//! The bridge to async code, both ways: a kvant task is a `Future` an async
//! task can `.await` (its completion wakes the async task's `Waker`; no
//! thread blocks), and [`block_on_future`] drives a future from a kvant task
//! parking only the green thread (its `Waker` unparks the task).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use super::JoinError;
use super::join::{Completion, JoinHandle};
use super::park::{self, Unparker};

/// Awaiting a `JoinHandle` gives what [`JoinHandle::join`] would, without
/// blocking the thread the async task runs on: the task's completion wakes
/// it. Polling again after it returned `Ready` panics, as for most futures.
///
/// ```
/// # let rt = kvant::Runtime::builder().workers(2).build().unwrap();
/// let h = rt.spawn(|| (1..=10u64).product::<u64>());
/// // Any executor: here kvant's own, from an OS thread.
/// assert_eq!(kvant::block_on_future(h).unwrap(), 3_628_800);
/// ```
impl<T: Send + 'static> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let packet = this.packet();
        if packet.is_complete() {
            return Poll::Ready(packet.take_polled());
        }
        // One registration per handle: a later poll's waker replaces it.
        let w = Unparker::Waker(cx.waker().clone());
        packet.remove_waiter(&w);
        if !packet.add_waiter(w) {
            return Poll::Ready(packet.take_polled());
        }
        Poll::Pending
    }
}

/// Wakes a parked green thread or OS thread: the `Waker` of
/// [`block_on_future`].
struct WakeParked(Unparker);

impl Wake for WakeParked {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Run `fut` to completion on the calling thread and return its output.
/// Inside a kvant task only the green thread parks between polls (the
/// worker runs other tasks); on an OS thread the thread parks. The future
/// is woken the usual way: whatever it waits for calls its `Waker`, which
/// unparks the caller. A task aborted or cancelled meanwhile drops the
/// future as it unwinds.
///
/// Futures that need a particular reactor (tokio's sockets and timers)
/// must still have that reactor running somewhere: a tokio channel or
/// oneshot filled by a tokio runtime on other threads works anywhere.
///
/// ```
/// let rt = kvant::Runtime::builder().workers(1).build().unwrap();
/// let first = rt.spawn(|| 20);
/// let h = rt.spawn(move || {
///     // Inside a task: awaits another task, parking only this green thread.
///     kvant::block_on_future(async move { first.await.unwrap() + 22 })
/// });
/// assert_eq!(h.join().unwrap(), 42);
/// ```
pub fn block_on_future<F: Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = Waker::from(Arc::new(WakeParked(park::current_unparker())));
    let mut cx = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        // A wake-up before this park leaves a token: it returns at once.
        park::park(super::WaitingOn::Future);
    }
}
