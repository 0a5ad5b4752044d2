//! Pods and namespaces over time: graceful deletion, namespace
//! finalization, pods reaching their phase, and the timers behind them.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{key, lookup, metadata_mut, set, EventType, Key, Store, Timer};
use crate::error::ApiError;
use crate::kinds::Kind;
use crate::{meta, pods};

impl Store {
    /// Delete an object (DELETE). Pods with a grace period and namespaces
    /// first turn Terminating and answer with the object; the rest go at
    /// once and answer with a `Success` Status.
    pub fn delete(
        &mut self,
        kind: &'static Kind,
        ns: &str,
        name: &str,
        grace: Option<i64>,
    ) -> Result<Value, ApiError> {
        let old = self.get(kind, ns, name)?;
        match kind.plural {
            "pods" => {
                let grace = grace
                    .or_else(|| old["spec"]["terminationGracePeriodSeconds"].as_i64())
                    .unwrap_or(30)
                    .max(0);
                if grace == 0 {
                    let gone = self.commit(kind, ns, EventType::Deleted, old.clone(), Some(old));
                    return Ok(gone);
                }
                let wait =
                    Duration::from_secs(grace.unsigned_abs()).min(self.timing.pod_terminate_delay);
                let at = Instant::now() + wait;
                let k = key(kind, ns, name);
                if let Some((when, Timer::PodRemove)) = self.timers.get(&k) {
                    if *when <= at {
                        return Ok(old);
                    }
                }
                self.timers.insert(k, (at, Timer::PodRemove));
                if old["metadata"].get("deletionTimestamp").is_some() {
                    return Ok(old);
                }
                let mut new = old.clone();
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let m = metadata_mut(&mut new);
                m.insert(
                    "deletionTimestamp".into(),
                    meta::rfc3339(secs + grace.unsigned_abs()).into(),
                );
                m.insert("deletionGracePeriodSeconds".into(), grace.into());
                Ok(self.commit(kind, ns, EventType::Modified, new, Some(old)))
            }
            "namespaces" => {
                if old["metadata"].get("deletionTimestamp").is_some() {
                    return Ok(old);
                }
                let mut new = old.clone();
                metadata_mut(&mut new)
                    .insert("deletionTimestamp".into(), meta::now_rfc3339().into());
                set(&mut new, "status", json!({"phase": "Terminating"}));
                let answer = self.commit(kind, ns, EventType::Modified, new, Some(old));
                let contents: Vec<Key> = self
                    .objects
                    .keys()
                    .filter(|(_, n, _)| n == name)
                    .cloned()
                    .collect();
                for (plural, n, obj_name) in contents {
                    let inner = lookup(plural);
                    if let Err(e) = self.delete(inner, &n, &obj_name, None) {
                        tracing::warn!(error = %e, "deleting {plural} {n}/{obj_name}");
                    }
                }
                self.timers.insert(
                    key(kind, "", name),
                    (Instant::now(), Timer::NamespaceFinalize),
                );
                Ok(answer)
            }
            _ => {
                let uid = old["metadata"]["uid"].clone();
                self.commit(kind, ns, EventType::Deleted, old.clone(), Some(old));
                Ok(json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Success",
                    "details": {"name": name, "group": kind.group, "kind": kind.plural, "uid": uid},
                }))
            }
        }
    }

    /// When the next timer fires.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.values().map(|(at, _)| *at).min()
    }

    /// Run the timers due at `now`.
    pub fn fire_due(&mut self, now: Instant) {
        let due: Vec<(Key, Timer)> = self
            .timers
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(k, (_, t))| (k.clone(), *t))
            .collect();
        for (k, timer) in due {
            self.timers.remove(&k);
            let (plural, ns, name) = k.clone();
            let kind = lookup(plural);
            let Some(old) = self.objects.get(&k).cloned() else {
                continue;
            };
            match timer {
                Timer::PodStart => {
                    let outcome = self.pod_outcome.clone();
                    self.set_pod_phase_of(&ns, old, &outcome);
                }
                Timer::PodRemove => {
                    self.commit(kind, &ns, EventType::Deleted, old.clone(), Some(old));
                }
                Timer::NamespaceFinalize => {
                    if self.objects.keys().any(|(_, n, _)| *n == name) {
                        let again = now + Duration::from_millis(50);
                        self.timers.insert(k, (again, Timer::NamespaceFinalize));
                    } else {
                        self.commit(kind, "", EventType::Deleted, old.clone(), Some(old));
                    }
                }
            }
        }
    }

    fn set_pod_phase_of(&mut self, ns: &str, old: Value, phase: &str) {
        if old["metadata"].get("deletionTimestamp").is_some() {
            return;
        }
        let mut new = old.clone();
        let ip_seed = self.rv + 1;
        if pods::set_phase(&mut new, phase, ip_seed) {
            self.commit(lookup("pods"), ns, EventType::Modified, new, Some(old));
        }
    }

    /// Admin: the phase later pods reach after the ready delay.
    pub fn set_pod_outcome(&mut self, phase: &str) {
        self.pod_outcome = phase.to_string();
    }

    /// Admin: move one pod to `phase` now.
    pub fn set_pod_phase(&mut self, ns: &str, name: &str, phase: &str) -> Result<Value, ApiError> {
        let kind = lookup("pods");
        let old = self.get(kind, ns, name)?;
        self.timers.remove(&key(kind, ns, name));
        self.set_pod_phase_of(ns, old, phase);
        self.get(kind, ns, name)
    }
}
