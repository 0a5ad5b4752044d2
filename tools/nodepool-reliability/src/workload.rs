//! The requestor: `n` node requests, `concurrency` at a time, each waited
//! for, its nodes taken and released as used at once. Requests are
//! ephemeral to the requestor's session, so their outcomes are tracked
//! here, not read back from the store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nodepool_core::client::{Client, PendingRequest, RequestOptions};
use nodepool_core::model::RequestState;
use nodepool_core::Error;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::setup::LABEL;

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Fulfilled: the nodes (id, external id) it was given.
    Fulfilled {
        /// `(node id, instance id)` of each node.
        nodes: Vec<(String, Option<String>)>,
    },
    /// Failed by the launchers, with their reason.
    Failed {
        /// Who declined it (upstream's failure record).
        reason: String,
    },
    /// Neither within the deadline, or the request vanished.
    Lost {
        /// What the requestor saw last.
        error: String,
    },
}

/// What the requestor saw.
#[derive(Debug, Default)]
pub struct WorkloadResult {
    /// One outcome per logical request, in submission order.
    pub outcomes: Vec<(String, Outcome)>,
    /// Requests written again because the first write vanished with a
    /// store session (what Zuul does after a ZooKeeper session loss).
    pub resubmitted: usize,
    /// Errors returning nodes (they stay `in-use` and are not deleted).
    pub release_errors: Vec<String>,
    /// Waits that ended after [`REREAD`] without an event for the request.
    pub rereads: usize,
    /// Seconds from the first submission to the fulfilment of each
    /// fulfilled request, in the order they ended.
    pub fulfil_secs: Vec<f64>,
}

/// How long the requestor waits for an event before reading the request
/// again.
pub const REREAD: Duration = Duration::from_secs(5);

/// Shared progress, for the kill schedule.
#[derive(Debug, Default)]
pub struct Progress {
    /// Requests finished (any outcome).
    pub done: AtomicUsize,
}

/// Run the workload until every request has an outcome or `deadline`.
pub async fn run(
    client: Client,
    total: usize,
    concurrency: usize,
    deadline: Instant,
    progress: Arc<Progress>,
) -> WorkloadResult {
    let result = Arc::new(Mutex::new(WorkloadResult::default()));
    let mut tasks = JoinSet::new();
    let mut next = 0usize;
    let mut outcomes: Vec<Option<(String, Outcome)>> = vec![None; total];
    while next < total || !tasks.is_empty() {
        while next < total && tasks.len() < concurrency.max(1) {
            let client = client.clone();
            let result = Arc::clone(&result);
            let index = next;
            tasks.spawn(async move { (index, one_request(&client, deadline, &result).await) });
            next += 1;
        }
        if let Some(Ok((index, outcome))) = tasks.join_next().await {
            outcomes[index] = Some(outcome);
            progress.done.fetch_add(1, Ordering::Relaxed);
        }
    }
    let mut out = std::mem::take(&mut *crate::lock(&result));
    out.outcomes = outcomes
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            o.unwrap_or_else(|| {
                (
                    format!("#{i}"),
                    Outcome::Lost {
                        error: "the requestor task died".into(),
                    },
                )
            })
        })
        .collect();
    out
}

async fn one_request(
    client: &Client,
    deadline: Instant,
    result: &Mutex<WorkloadResult>,
) -> (String, Outcome) {
    let submitted = Instant::now();
    let mut request = match submit(client, deadline).await {
        Ok(r) => r,
        Err(error) => return ("-".into(), Outcome::Lost { error }),
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (
                request.id.clone(),
                Outcome::Lost {
                    error: "not fulfilled within the deadline".into(),
                },
            );
        }
        // Re-read at least every few seconds: a watch that misses an event
        // (see doc/reliability.md) must not stall the requestor for good.
        match client.wait_fulfilled(&request, left.min(REREAD)).await {
            Ok(locked) => {
                let nodes = locked
                    .nodes()
                    .map(|n| (n.id.clone(), n.external_id.clone()))
                    .collect();
                let id = locked.request_id().to_string();
                crate::lock(result)
                    .fulfil_secs
                    .push(submitted.elapsed().as_secs_f64());
                if let Err(e) = client.release(locked).await {
                    crate::lock(result)
                        .release_errors
                        .push(format!("request {id}: {e}"));
                }
                return (id, Outcome::Fulfilled { nodes });
            }
            Err(Error::Timeout { .. }) => {
                crate::lock(result).rereads += 1;
                continue;
            }
            Err(e) => match client.state(&request).await {
                Ok(Some(r)) if r.state == Some(RequestState::Failed) => {
                    let _ = client.cancel(&request).await;
                    return (
                        request.id.clone(),
                        Outcome::Failed {
                            reason: if r.declined_by.is_empty() {
                                String::new()
                            } else {
                                format!("declined by {}", r.declined_by.join(", "))
                            },
                        },
                    );
                }
                Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                Ok(None) => {
                    // The request died with our session (ZooKeeper session
                    // expiry): write it again, as Zuul does.
                    crate::lock(result).resubmitted += 1;
                    match submit(client, deadline).await {
                        Ok(r) => request = r,
                        Err(error) => {
                            return (
                                request.id.clone(),
                                Outcome::Lost {
                                    error: format!("{e}; resubmitting: {error}"),
                                },
                            )
                        }
                    }
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            },
        }
    }
}

async fn submit(client: &Client, deadline: Instant) -> Result<PendingRequest, String> {
    loop {
        match client.submit(&[LABEL], &RequestOptions::default()).await {
            Ok(r) => return Ok(r),
            Err(e) if Instant::now() >= deadline => return Err(format!("cannot submit: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
