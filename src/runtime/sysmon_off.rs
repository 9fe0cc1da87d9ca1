//! The monitor on targets without preemption: never started (kvant is
//! cooperative-only there; see `preempt::SUPPORTED`).

/// Stub monitor for targets without preemption: never started.
pub(crate) struct Monitor;

impl Monitor {
    pub(crate) fn start(
        _shared: &std::sync::Arc<super::Shared>,
        _preemptive: bool,
        _switch_waits: bool,
    ) -> Result<Option<Monitor>, crate::Error> {
        Ok(None)
    }
    pub(crate) fn stop(&self) {}
    pub(crate) fn kick(&self) {}
    pub(crate) fn wake_up(&self) {}
}
