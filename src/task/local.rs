//! Task-local storage: values that follow a green thread across workers.
//!
//! `thread_local!` inside a task names the *worker's* slot, and a task that
//! switches out can resume on another worker, so thread-locals are the wrong
//! tool for per-task state. A [`LocalKey`] declared with [`task_local!`]
//! instead lives in the task itself: initialised on first access, dropped when
//! the task ends, and the same value on whichever worker runs the task.

use std::any::Any;
use std::fmt;
use std::sync::OnceLock;

use parking_lot::Mutex;

use super::current;

/// The values of every task-local a task has touched. Only the task itself
/// reads or inserts; the lock is never contended and only guards the list.
/// The list is boxed on first use: most tasks never touch a task-local,
/// and every task carries this map (16 bytes instead of 40); their exit is
/// one load.
#[derive(Default)]
pub(crate) struct LocalMap {
    slots: OnceLock<Box<Mutex<Slots>>>,
}

type Slots = Vec<(usize, Box<dyn Any + Send>)>;

impl LocalMap {
    fn find<T: 'static>(&self, key: usize) -> Option<*const T> {
        let slots = self.slots.get()?.lock();
        slots
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| value_ptr::<T>(&**v))
    }

    /// Store `value` for `key` unless a value got there first (then
    /// `value` is dropped, outside the lock); the stored value's address.
    fn insert<T: 'static>(&self, key: usize, value: Box<dyn Any + Send>) -> *const T {
        let mut list = self.slots.get_or_init(Default::default).lock();
        if let Some((_, v)) = list.iter().find(|(k, _)| *k == key) {
            let p = value_ptr::<T>(&**v);
            drop(list);
            drop(value);
            return p;
        }
        list.push((key, value));
        value_ptr::<T>(&*list[list.len() - 1].1)
    }

    /// Drop every value (the task finished). Destructors run outside the
    /// lock, so they may use other task-locals.
    pub(crate) fn clear(&self) {
        let Some(slots) = self.slots.get() else {
            return;
        };
        loop {
            let values = std::mem::take(&mut *slots.lock());
            if values.is_empty() {
                return;
            }
            drop(values);
        }
    }
}

/// The address of a stored value, as its key's type.
fn value_ptr<T: 'static>(v: &(dyn Any + Send)) -> *const T {
    v.downcast_ref::<T>()
        .expect("task-local slot holds its key's type") as *const T
}

/// A task-local key, created by [`task_local!`](crate::task_local).
pub struct LocalKey<T: Send + 'static> {
    #[doc(hidden)]
    pub init: fn() -> T,
}

impl<T: Send + 'static> std::fmt::Debug for LocalKey<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKey").finish_non_exhaustive()
    }
}

/// Accessing a task-local outside of a task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessError;

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task-local accessed outside of a kvant task")
    }
}

impl std::error::Error for AccessError {}

impl<T: Send + 'static> LocalKey<T> {
    #[doc(hidden)]
    pub const fn new(init: fn() -> T) -> Self {
        LocalKey { init }
    }

    /// Borrow this task's value (initialising it on first use).
    ///
    /// # Panics
    /// Outside a kvant task.
    #[track_caller]
    pub fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        self.try_with(f)
            .expect("task-local accessed outside of a kvant task")
    }

    /// Like [`with`](Self::with), but an error outside a task.
    pub fn try_with<R>(&'static self, f: impl FnOnce(&T) -> R) -> Result<R, AccessError> {
        let key = self as *const Self as usize;
        let found = current::with_current(|task| task.locals.find::<T>(key)).ok_or(AccessError)?;
        let ptr = match found {
            Some(p) => p,
            None => {
                // Outside the lock and outside `with_current`: `init` may
                // use other task-locals, or switch. If it used this one,
                // the first value stored wins.
                let value: Box<dyn Any + Send> = Box::new((self.init)());
                current::with_current(|task| task.locals.insert::<T>(key, value))
                    .ok_or(AccessError)?
            }
        };
        // SAFETY: the value is boxed (its address never moves when the list
        // grows) and is only dropped when the task's `LocalMap` is dropped,
        // after the task's body has finished; `f` runs inside the body.
        Ok(f(unsafe { &*ptr }))
    }
}

/// Declare task-local statics: like `thread_local!`, but each kvant task gets
/// its own value, which follows it to whatever worker runs it.
///
/// ```
/// use std::cell::Cell;
/// kvant::task_local! {
///     static COUNT: Cell<u32> = Cell::new(0);
/// }
/// let rt = kvant::Runtime::builder().workers(2).build().unwrap();
/// let n = rt.block_on(|| {
///     COUNT.with(|c| c.set(c.get() + 1));
///     kvant::yield_now(); // may resume on another worker
///     COUNT.with(|c| c.get())
/// });
/// assert_eq!(n, 1);
/// ```
#[macro_export]
macro_rules! task_local {
    () => {};
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr; $($rest:tt)*) => {
        $(#[$attr])*
        $vis static $name: $crate::task::LocalKey<$t> = $crate::task::LocalKey::new({
            fn __kvant_init() -> $t {
                $init
            }
            __kvant_init
        });
        $crate::task_local!($($rest)*);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr) => {
        $crate::task_local!($(#[$attr])* $vis static $name: $t = $init;);
    };
}
