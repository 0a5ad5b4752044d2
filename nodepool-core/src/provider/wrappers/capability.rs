//! [`CapabilityCheck`]: unsupported operations never reach the driver.

use std::future::Future;

use super::around_every_call;
use crate::provider::{unsupported, Provider};
use crate::Result;

/// Answers a call to an operation the inner provider's
/// [`capabilities`](Provider::capabilities) do not allow with
/// [`Error::Unsupported`](crate::Error::Unsupported) naming provider and
/// operation, without calling the inner provider (OpenDAL's
/// `CorrectnessCheckLayer`).
#[derive(Debug)]
pub struct CapabilityCheck<P> {
    inner: P,
}

impl<P: Provider> CapabilityCheck<P> {
    /// Check the calls to `inner`.
    pub fn new(inner: P) -> Self {
        Self { inner }
    }

    /// The wrapped provider.
    pub fn inner(&self) -> &P {
        &self.inner
    }

    async fn around<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T>> + Send,
    ) -> Result<T> {
        if self.inner.capabilities().allows(operation) {
            call.await
        } else {
            Err(unsupported(self.inner.name(), operation))
        }
    }
}

around_every_call!(CapabilityCheck);
