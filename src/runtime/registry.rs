//! Every task that has ever switched out, so that shutdown can find the
//! parked ones no queue holds (a parked task is referenced only by whoever
//! would wake it), and a task dump can list the runnable ones too. A task
//! registers at its first switch (park, yield, preemption) and leaves when
//! it finishes. A task that runs to its end in one slice never registers:
//! the dump finds it on its worker (or counts it as not started).
//!
//! Sharded slabs: a task's first switch (and its end, if it ever switched)
//! locks one shard chosen by task id, so workers switching different tasks
//! at once rarely meet on the same lock. Spawning touches no shard.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::Mutex;

use crate::task::Task;

const SHARDS: usize = 16;

#[derive(Default)]
struct Slab {
    slots: Vec<Option<Arc<Task>>>,
    free: Vec<usize>,
}

pub(crate) struct TaskRegistry {
    shards: Box<[Mutex<Slab>]>,
}

impl TaskRegistry {
    pub(crate) fn new() -> Self {
        TaskRegistry {
            shards: (0..SHARDS).map(|_| Mutex::new(Slab::default())).collect(),
        }
    }

    fn shard_of(task: &Task) -> usize {
        task.id.as_u64() as usize % SHARDS
    }

    /// Register `task` unless it already is. Only the thread holding the
    /// task's run claim calls this, so the check cannot race with itself.
    #[inline]
    pub(crate) fn insert_once(&self, task: &Arc<Task>) {
        if task.registry_slot.load(Ordering::Relaxed) == usize::MAX {
            self.insert(task);
        }
    }

    #[cold]
    fn insert(&self, task: &Arc<Task>) {
        let mut slab = self.shards[Self::shard_of(task)].lock();
        let i = match slab.free.pop() {
            Some(i) => {
                slab.slots[i] = Some(task.clone());
                i
            }
            None => {
                slab.slots.push(Some(task.clone()));
                slab.slots.len() - 1
            }
        };
        task.registry_slot.store(i, Ordering::Relaxed);
    }

    pub(crate) fn remove(&self, task: &Task) {
        if task.registry_slot.load(Ordering::Relaxed) == usize::MAX {
            return;
        }
        let i = task.registry_slot.swap(usize::MAX, Ordering::Relaxed);
        let removed = {
            let mut slab = self.shards[Self::shard_of(task)].lock();
            let t = slab.slots[i].take();
            slab.free.push(i);
            t
        };
        // Drop outside the lock: the last reference may run task-local destructors.
        drop(removed);
    }

    /// A snapshot of every live task.
    pub(crate) fn snapshot(&self) -> Vec<Arc<Task>> {
        let mut out = Vec::new();
        for s in self.shards.iter() {
            out.extend(s.lock().slots.iter().flatten().cloned());
        }
        out
    }
}
