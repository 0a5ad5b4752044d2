//! Cloud faults through the simulator's admin API: every 50 ms, with the
//! configured probability, one fault is armed for the next matching call
//! (`times: 1`): a 500 on server create, a quota 403 on server create, a
//! dropped connection on a server listing or show, a 3 s stall of a
//! server call, or a server that boots into ERROR.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::procs::SimProcess;
use crate::rng::Rng;

/// What was injected.
#[derive(Debug, Default, Clone, Serialize)]
pub struct FaultStats {
    /// Faults armed, by kind.
    pub armed: std::collections::BTreeMap<String, u64>,
    /// Armed faults a call consumed before the next was armed.
    pub consumed: u64,
    /// Errors talking to the admin API.
    pub admin_errors: u64,
}

/// The running injector.
#[derive(Debug)]
pub struct FaultInjector {
    cancel: CancellationToken,
    task: JoinHandle<FaultStats>,
}

const KINDS: &[&str] = &[
    "create-500",
    "create-quota-403",
    "list-dropped",
    "call-stalled-3s",
    "boot-error",
];

fn fault(kind: &str) -> Value {
    match kind {
        "create-500" => json!({"rules": [{"method": "POST", "path": "/servers", "status": 500,
            "message": "chaos: internal error", "times": 1}]}),
        "create-quota-403" => {
            json!({"rules": [{"method": "POST", "path": "/servers", "status": 403,
            "message": "Quota exceeded for instances: Requested 1, but already used 20 of 20 instances",
            "times": 1}]})
        }
        "list-dropped" => json!({"rules": [{"method": "GET", "path": "/servers",
            "drop_connection": true, "times": 1}]}),
        "call-stalled-3s" => json!({"rules": [{"path": "/servers", "delay_ms": 3000, "times": 1}]}),
        _ => json!({"boot_error": {"message": "No valid host was found.", "times": 1}}),
    }
}

fn consumed(current: &Value) -> bool {
    let rule_used = current
        .get("rules")
        .and_then(Value::as_array)
        .and_then(|r| r.first())
        .and_then(|r| r.get("times"))
        .and_then(Value::as_u64)
        == Some(0);
    let boot_used = current
        .get("boot_error")
        .and_then(|b| b.get("times"))
        .and_then(Value::as_u64)
        == Some(0);
    rule_used || boot_used
}

impl FaultInjector {
    /// Start injecting into `sim` with probability `rate` per 50 ms tick.
    pub fn start(sim: Arc<SimProcess>, rate: f64, seed: u64) -> Self {
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let task = tokio::spawn(async move {
            let mut rng = Rng::new(seed);
            let mut stats = FaultStats::default();
            let mut armed = false;
            while !stop.is_cancelled() {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                if armed {
                    match sim.faults().await {
                        Ok(current) if consumed(&current) => {
                            stats.consumed += 1;
                            armed = false;
                        }
                        Ok(_) => continue,
                        Err(_) => stats.admin_errors += 1,
                    }
                }
                if !rng.chance(rate) {
                    continue;
                }
                let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
                match sim.set_faults(&fault(kind)).await {
                    Ok(()) => {
                        *stats.armed.entry(kind.to_string()).or_default() += 1;
                        armed = true;
                    }
                    Err(_) => stats.admin_errors += 1,
                }
            }
            let _ = sim.set_faults(&json!({})).await;
            stats
        });
        Self { cancel, task }
    }

    /// Stop injecting, clear the faults, and say what was done.
    pub async fn stop(self) -> FaultStats {
        self.cancel.cancel();
        self.task.await.unwrap_or_default()
    }
}
