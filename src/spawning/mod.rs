//! Spawning façades: the public ways to make tasks (`task::Builder`,
//! `scope`, `JoinSet`, `join`). They sit above the runtime, which they call,
//! and above the task core, which knows no scheduler; `kvant::task`
//! re-exports them as the public path.

mod builder;
mod fork;
mod scope;
mod set;

pub use builder::Builder;
pub use fork::join;
pub use scope::{Scope, ScopedJoinHandle, scope};
pub use set::{Elapsed, JoinSet, SpawnTarget};
