//! Conveniences over any [`Provider`]: waiting for ACTIVE with a hook that
//! classifies a failed boot, walking the paged listing, checking a
//! capability. None of them is a trait method a driver could get wrong.

use crate::ErrorKind;
use std::time::Duration;

use async_trait::async_trait;

use super::{unsupported, Instance, InstanceState, Provider, INSTANCE_PAGE_SIZE};
use crate::{Error, Result};

/// First poll delay of [`wait_active_with`]; it doubles up to one second.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The longest delay between two polls of [`wait_active_with`].
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What a failed boot means, for drivers that know better than "a
/// retryable cloud error": called with the instance in
/// [`InstanceState::Error`] and its fault message. `Some(error)` is
/// returned from the wait as is (OpenStack answers
/// [`Error::QuotaExceeded`] for a quota fault, so the engine pauses the
/// pool instead of retrying); `None` keeps the generic [`Error::Cloud`].
pub type BootClassifier<'a> = &'a (dyn Fn(&Instance, &str) -> Option<Error> + Send + Sync);

/// Poll `provider.get_instance` until the instance is active, failed, gone
/// or `timeout` has passed, starting at [`DEFAULT_POLL_INTERVAL`].
///
/// A failed instance is `classify`'s error, or a retryable
/// [`Error::Cloud`] when it returns `None`; a vanished one is a retryable
/// [`Error::Cloud`]; one still building at the deadline is
/// [`Error::Timeout`].
pub async fn wait_active_with<P: Provider + ?Sized>(
    provider: &P,
    external_id: &str,
    timeout: Duration,
    classify: BootClassifier<'_>,
) -> Result<Instance> {
    poll(
        provider,
        external_id,
        timeout,
        DEFAULT_POLL_INTERVAL,
        classify,
    )
    .await
}

/// Poll `provider.get_instance` until the instance `external_id` is gone
/// (deleted and no longer counted by the cloud, as Nova still counts a
/// server that is `deleting`) or `timeout` has passed: `Ok(true)` when it
/// is gone, `Ok(false)` when it is still there at the deadline.
pub async fn wait_gone<P: Provider + ?Sized>(
    provider: &P,
    external_id: &str,
    timeout: Duration,
) -> Result<bool> {
    let deadline = crate::time::deadline_after(timeout);
    let mut delay = DEFAULT_POLL_INTERVAL;
    loop {
        if provider.get_instance(external_id).await?.is_none() {
            return Ok(true);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay * 2).min(MAX_POLL_INTERVAL);
    }
}

/// [`wait_active_with`] without a classifier and with the first poll delay
/// `interval`.
pub async fn poll_until_active<P: Provider + ?Sized>(
    provider: &P,
    external_id: &str,
    timeout: Duration,
    interval: Duration,
) -> Result<Instance> {
    poll(provider, external_id, timeout, interval, &|_, _| None).await
}

async fn poll<P: Provider + ?Sized>(
    provider: &P,
    external_id: &str,
    timeout: Duration,
    interval: Duration,
    classify: BootClassifier<'_>,
) -> Result<Instance> {
    let cloud_error = |message: String| Error::Cloud {
        provider: provider.name().to_string(),
        message,
        kind: ErrorKind::Transient,
        source: None,
    };
    let deadline = crate::time::deadline_after(timeout);
    let mut delay = interval;
    loop {
        match provider.get_instance(external_id).await? {
            Some(inst) => match &inst.state {
                Some(InstanceState::Active) => return Ok(inst),
                Some(InstanceState::Error(fault)) => {
                    return Err(classify(&inst, fault).unwrap_or_else(|| {
                        cloud_error(format!("instance {external_id} failed: {fault}"))
                    }))
                }
                _ => {}
            },
            None => {
                return Err(cloud_error(format!(
                    "instance {external_id} disappeared while booting"
                )))
            }
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(Error::Timeout {
                what: format!("instance {external_id} to become active"),
                after: timeout,
            });
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay * 2).min(MAX_POLL_INTERVAL);
    }
}

/// Walk every instance of `provider` page by page
/// ([`Provider::list_instances_page`], [`INSTANCE_PAGE_SIZE`] a page),
/// handing each to `visit`. Only one page is held at a time. A driver that
/// answers a page with the marker it was given fails the walk instead of
/// looping.
pub async fn for_each_instance<P: Provider + ?Sized>(
    provider: &P,
    mut visit: impl FnMut(Instance) + Send,
) -> Result<()> {
    let mut marker: Option<String> = None;
    loop {
        let page = provider
            .list_instances_page(marker.as_deref(), INSTANCE_PAGE_SIZE)
            .await?;
        let empty = page.instances.is_empty();
        page.instances.into_iter().for_each(&mut visit);
        match page.next {
            None => return Ok(()),
            Some(_) if empty => return Ok(()),
            Some(next) if marker.as_deref() == Some(next.as_str()) => {
                return Err(Error::Cloud {
                    provider: provider.name().to_string(),
                    message: format!("instance listing does not advance past marker {next}"),
                    kind: ErrorKind::Permanent,
                    source: None,
                });
            }
            Some(next) => marker = Some(next),
        }
    }
}

/// Every instance of `provider`, walked with [`for_each_instance`] into
/// one vector. For tools and tests; the engine walks pages instead.
pub async fn list_all_instances<P: Provider + ?Sized>(provider: &P) -> Result<Vec<Instance>> {
    let mut out = Vec::new();
    for_each_instance(provider, |instance| out.push(instance)).await?;
    Ok(out)
}

/// Conveniences over any [`Provider`] (blanket-implemented).
#[async_trait]
pub trait ProviderExt: Provider {
    /// Fail with [`Error::Unsupported`] unless the provider's capabilities
    /// allow `operation` (a [`Provider`] method name; see
    /// [`ProviderCapabilities::allows`](super::ProviderCapabilities::allows)).
    fn require(&self, operation: &'static str) -> Result<()> {
        if self.capabilities().allows(operation) {
            Ok(())
        } else {
            Err(unsupported(self.name(), operation))
        }
    }

    /// [`wait_active_with`] on this provider.
    async fn wait_active_with(
        &self,
        external_id: &str,
        timeout: Duration,
        classify: BootClassifier<'_>,
    ) -> Result<Instance> {
        wait_active_with(self, external_id, timeout, classify).await
    }

    /// [`list_all_instances`] of this provider.
    async fn list_all_instances(&self) -> Result<Vec<Instance>> {
        list_all_instances(self).await
    }
}

impl<P: Provider + ?Sized> ProviderExt for P {}
