//! The state file: the whole cluster as JSON, rewritten on every change
//! and reloaded at start.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{key, str_at, Store, Timer};
use crate::kinds;

/// The state file's content.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Persisted {
    resource_version: u64,
    token: String,
    objects: Vec<Value>,
}

impl Store {
    pub(super) fn load(&mut self, saved: Persisted, token: Option<String>) {
        self.rv = saved.resource_version;
        self.expired_upto = saved.resource_version;
        self.token = token.unwrap_or(saved.token);
        let now = Instant::now();
        for object in saved.objects {
            let Some(kind) = object
                .get("kind")
                .and_then(Value::as_str)
                .and_then(kinds::by_kind)
            else {
                continue;
            };
            let ns = str_at(&object, &["metadata", "namespace"]).unwrap_or("");
            let name = str_at(&object, &["metadata", "name"]).unwrap_or("");
            let k = key(kind, ns, name);
            let deleting = object["metadata"].get("deletionTimestamp").is_some();
            match kind.plural {
                "pods" if deleting => {
                    self.timers.insert(
                        k.clone(),
                        (now + self.timing.pod_terminate_delay, Timer::PodRemove),
                    );
                }
                "pods" if str_at(&object, &["status", "phase"]) == Some("Pending") => {
                    self.timers.insert(
                        k.clone(),
                        (now + self.timing.pod_ready_delay, Timer::PodStart),
                    );
                }
                "namespaces" if deleting => {
                    self.timers
                        .insert(k.clone(), (now, Timer::NamespaceFinalize));
                }
                _ => {}
            }
            self.objects.insert(k, object);
        }
    }

    pub(super) fn persist(&self) {
        let Some(path) = &self.state_file else {
            return;
        };
        let saved = Persisted {
            resource_version: self.rv,
            token: self.token.clone(),
            objects: self.objects.values().cloned().collect(),
        };
        let tmp = path.with_extension("tmp");
        let result = serde_json::to_vec(&saved)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = result {
            tracing::warn!(path = %path.display(), error = %e, "cannot save the state file");
        }
    }
}
