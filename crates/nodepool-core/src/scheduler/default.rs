//! The default scheduler: upstream nodepool 11's semantics.

/// Upstream nodepool's request handling rules as a [`Scheduler`](super::Scheduler).
#[derive(Debug, Default, Clone)]
pub struct DefaultScheduler;

impl super::Scheduler for DefaultScheduler {
    fn schedule(&self, _input: &super::SchedulingInput) -> Vec<super::Decision> {
        Vec::new()
    }
}
