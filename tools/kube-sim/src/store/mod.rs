//! The cluster's objects, the global resourceVersion and the bounded event
//! history that watches replay; pod and namespace lifecycles are in
//! `lifecycle.rs`, the state file in `persist.rs`.

mod lifecycle;
mod persist;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use persist::Persisted;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast;

use crate::error::{ApiError, Error};
use crate::kinds::{self, Kind};
use crate::meta;
use crate::pods;
use crate::selectors::{FieldSelector, LabelSelector};

/// Where an object lives: kind, namespace (`""` when cluster-scoped), name.
pub type Key = (&'static str, String, String);

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The object appeared.
    Added,
    /// The object changed.
    Modified,
    /// The object is gone.
    Deleted,
}

impl EventType {
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resourceVersion the change made.
    pub rv: u64,
    /// The object's kind.
    pub kind: &'static Kind,
    /// The object's namespace (`""` when cluster-scoped).
    pub namespace: String,
    /// What happened.
    pub event_type: EventType,
    /// The object after the change (before it, for `Deleted`).
    pub object: Value,
    /// The object before a change, so selector watches can tell entering
    /// from leaving.
    pub old: Option<Value>,
}

/// How long pods take.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// From creation to the outcome phase (Running by default).
    pub pod_ready_delay: Duration,
    /// How long a deleted pod's containers take to stop; the pod goes at
    /// the earlier of this and its grace period.
    pub pod_terminate_delay: Duration,
}

/// Work a timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    PodStart,
    PodRemove,
    NamespaceFinalize,
}

/// The cluster.
#[derive(Debug)]
pub struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<Event>,
    history_limit: usize,
    /// Events up to this resourceVersion are no longer in `history`.
    expired_upto: u64,
    events: broadcast::Sender<Event>,
    timers: BTreeMap<Key, (Instant, Timer)>,
    state_file: Option<PathBuf>,
    token: String,
    timing: Timing,
    /// The phase new pods reach after the ready delay.
    pod_outcome: String,
}

fn key(kind: &'static Kind, ns: &str, name: &str) -> Key {
    (kind.plural, ns.to_string(), name.to_string())
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// `object.metadata`, created when missing (a non-object becomes `{}`).
pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = json!({});
    }
    if !object.get("metadata").is_some_and(Value::is_object) {
        if let Some(map) = object.as_object_mut() {
            map.insert("metadata".into(), json!({}));
        }
    }
    match object.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(m) => m,
        None => unreachable!("metadata was just made an object"),
    }
}

fn set(object: &mut Value, field: &str, value: Value) {
    if let Some(map) = object.as_object_mut() {
        map.insert(field.into(), value);
    }
}

impl Store {
    /// A cluster with the standard namespaces, or the one in `state_file`
    /// when that file exists.
    pub fn new(
        state_file: Option<PathBuf>,
        token: Option<String>,
        timing: Timing,
        history_limit: usize,
    ) -> Result<Self, Error> {
        let (events, _) = broadcast::channel(4096);
        let mut store = Self {
            objects: BTreeMap::new(),
            rv: 0,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            expired_upto: 0,
            events,
            timers: BTreeMap::new(),
            state_file: state_file.clone(),
            token: token
                .clone()
                .unwrap_or_else(|| format!("kube-sim-{}", uuid::Uuid::new_v4().simple())),
            timing,
            pod_outcome: "Running".into(),
        };
        if let Some(path) = state_file.filter(|p| p.exists()) {
            let text = std::fs::read(&path).map_err(|source| Error::File {
                path: path.clone(),
                source,
            })?;
            let saved: Persisted = serde_json::from_slice(&text)
                .map_err(|source| Error::StateFile { path, source })?;
            store.load(saved, token);
        } else {
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let body = json!({"metadata": {"name": ns}});
                if let Err(e) = store.create(lookup("namespaces"), None, body) {
                    tracing::warn!(error = %e, "seeding namespace {ns}");
                }
            }
        }
        Ok(store)
    }

    /// The bearer token of the kubeconfig.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Whether `token` may call the API: the kubeconfig's token or one the
    /// sim wrote into a service-account token secret.
    pub fn accepts_token(&self, token: &str) -> bool {
        if token == self.token {
            return true;
        }
        let encoded = meta::base64(token.as_bytes());
        self.objects
            .iter()
            .filter(|((plural, _, _), _)| *plural == "secrets")
            .any(|(_, s)| str_at(s, &["data", "token"]) == Some(encoded.as_str()))
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The object, or 404.
    pub fn get(&self, kind: &'static Kind, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&key(kind, ns, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(kind.group, kind.plural, name))
    }

    /// Objects of `kind` in `ns` (every namespace when `None`) matching the
    /// selectors, by namespace and name.
    pub fn list(
        &self,
        kind: &'static Kind,
        ns: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((plural, n, _), _)| *plural == kind.plural && ns.map_or(true, |ns| ns == n))
            .filter(|(_, o)| matches(o, labels, fields))
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// Every object, for the admin API.
    pub fn all(&self) -> impl Iterator<Item = (&Key, &Value)> {
        self.objects.iter()
    }

    /// A receiver of every later change.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The kept events after `rv`, or 410 when some are no longer kept.
    pub fn events_since(&self, rv: u64) -> Result<Vec<Event>, ApiError> {
        if rv < self.expired_upto {
            return Err(ApiError::gone(rv, self.expired_upto + 1));
        }
        Ok(self.history.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    /// Record a change: bump the resourceVersion, store, keep and send the
    /// event, save the state file.
    fn commit(
        &mut self,
        kind: &'static Kind,
        ns: &str,
        event_type: EventType,
        mut object: Value,
        old: Option<Value>,
    ) -> Value {
        self.rv += 1;
        metadata_mut(&mut object).insert("resourceVersion".into(), self.rv.to_string().into());
        let name = str_at(&object, &["metadata", "name"])
            .unwrap_or("")
            .to_string();
        let k = key(kind, ns, &name);
        if event_type == EventType::Deleted {
            self.objects.remove(&k);
            self.timers.remove(&k);
        } else {
            self.objects.insert(k, object.clone());
        }
        let event = Event {
            rv: self.rv,
            kind,
            namespace: ns.to_string(),
            event_type,
            object: object.clone(),
            old,
        };
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(e) = self.history.pop_front() {
                self.expired_upto = e.rv;
            }
        }
        let _ = self.events.send(event);
        self.persist();
        object
    }

    /// Create an object from `body` (POST); `ns` for namespaced kinds.
    pub fn create(
        &mut self,
        kind: &'static Kind,
        ns: Option<&str>,
        mut body: Value,
    ) -> Result<Value, ApiError> {
        check_body(kind, &mut body)?;
        let ns = ns.unwrap_or("");
        let meta = metadata_mut(&mut body);
        if kind.namespaced {
            match meta.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ))
                }
                _ => {
                    meta.insert("namespace".into(), ns.into());
                }
            }
        } else {
            meta.remove("namespace");
        }
        let name = match meta.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match meta.get("generateName").and_then(Value::as_str) {
                Some(g) if !g.is_empty() => format!("{g}{}", meta::name_suffix()),
                _ => {
                    return Err(ApiError::invalid(
                        kind.kind,
                        kind.group,
                        "",
                        "metadata.name",
                        "Required value: name or generateName is required",
                    ))
                }
            },
        };
        if let Some(problem) = meta::name_problem(kind.name_rule, &name) {
            let detail = format!("Invalid value: \"{name}\": {problem}");
            return Err(ApiError::invalid(
                kind.kind,
                kind.group,
                &name,
                "metadata.name",
                &detail,
            ));
        }
        meta.insert("name".into(), name.clone().into());
        let now = meta::now_rfc3339();
        meta.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
        meta.insert("creationTimestamp".into(), now.clone().into());
        for field in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ] {
            meta.remove(field);
        }
        set(&mut body, "kind", kind.kind.into());
        set(&mut body, "apiVersion", kind.api_version().into());
        if kind.namespaced {
            match self.objects.get(&key(lookup("namespaces"), "", ns)) {
                None => return Err(ApiError::not_found("", "namespaces", ns)),
                Some(n) if n["metadata"].get("deletionTimestamp").is_some() => {
                    return Err(ApiError::forbidden(format!(
                        "{} \"{name}\" is forbidden: unable to create new content in namespace \
                         {ns} because it is being terminated",
                        kind.plural
                    )))
                }
                Some(_) => {}
            }
        }
        if self.objects.contains_key(&key(kind, ns, &name)) {
            return Err(ApiError::already_exists(kind.group, kind.plural, &name));
        }
        match kind.plural {
            "namespaces" => {
                metadata_mut(&mut body)
                    .entry("labels")
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .map(|l| l.insert("kubernetes.io/metadata.name".into(), name.clone().into()));
                set(&mut body, "spec", json!({"finalizers": ["kubernetes"]}));
                set(&mut body, "status", json!({"phase": "Active"}));
            }
            "pods" => pods::validate_and_default(&mut body, &name)?,
            "secrets" => self.fill_secret(&mut body, ns, &name)?,
            "rolebindings" => {
                let ok = str_at(&body, &["roleRef", "kind"]).is_some()
                    && str_at(&body, &["roleRef", "name"]).is_some();
                if !ok {
                    return Err(ApiError::invalid(
                        kind.kind,
                        kind.group,
                        &name,
                        "roleRef.name",
                        "Required value",
                    ));
                }
            }
            _ => {}
        }
        let created = self.commit(kind, ns, EventType::Added, body, None);
        match kind.plural {
            "namespaces" => {
                let sa = lookup("serviceaccounts");
                let body = json!({"metadata": {"name": "default"}});
                if let Err(e) = self.create(sa, Some(&name), body) {
                    tracing::warn!(error = %e, "default service account of {name}");
                }
            }
            "pods" => {
                let at = Instant::now() + self.timing.pod_ready_delay;
                self.timers
                    .insert(key(kind, ns, &name), (at, Timer::PodStart));
            }
            _ => {}
        }
        Ok(created)
    }

    /// Secrets: `stringData` into `data`; service-account token secrets get
    /// their token, CA and namespace as the token controller writes them.
    fn fill_secret(&self, body: &mut Value, ns: &str, name: &str) -> Result<(), ApiError> {
        let mut data = body
            .get("data")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if let Some(string_data) = body.get("stringData").and_then(Value::as_object) {
            for (k, v) in string_data {
                let text = v.as_str().unwrap_or_default();
                data.insert(k.clone(), meta::base64(text.as_bytes()).into());
            }
        }
        if let Some(map) = body.as_object_mut() {
            map.remove("stringData");
            map.entry("type").or_insert_with(|| "Opaque".into());
        }
        if str_at(body, &["type"]) == Some("kubernetes.io/service-account-token") {
            let annotation = "kubernetes.io/service-account.name";
            let Some(sa) = str_at(body, &["metadata", "annotations", annotation]) else {
                return Err(ApiError::invalid(
                    "Secret",
                    "",
                    name,
                    &format!("metadata.annotations[{annotation}]"),
                    "Required value",
                ));
            };
            let sa_uid = self
                .objects
                .get(&key(lookup("serviceaccounts"), ns, sa))
                .and_then(|s| str_at(s, &["metadata", "uid"]))
                .unwrap_or("")
                .to_string();
            let token = format!("kube-sim.{ns}.{sa}.{}", uuid::Uuid::new_v4().simple());
            data.insert("token".into(), meta::base64(token.as_bytes()).into());
            data.insert(
                "ca.crt".into(),
                meta::base64(crate::CA_CERT_PEM.as_bytes()).into(),
            );
            data.insert("namespace".into(), meta::base64(ns.as_bytes()).into());
            if let Some(a) = metadata_mut(body)
                .get_mut("annotations")
                .and_then(Value::as_object_mut)
            {
                a.insert("kubernetes.io/service-account.uid".into(), sa_uid.into());
            }
        }
        set(body, "data", Value::Object(data));
        Ok(())
    }

    /// Replace an object (PUT); a stale `metadata.resourceVersion` is a 409.
    pub fn replace(
        &mut self,
        kind: &'static Kind,
        ns: &str,
        name: &str,
        mut body: Value,
    ) -> Result<Value, ApiError> {
        check_body(kind, &mut body)?;
        let old = self.get(kind, ns, name)?;
        let body_name = str_at(&body, &["metadata", "name"]).unwrap_or(name);
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let asked_rv = str_at(&body, &["metadata", "resourceVersion"]).unwrap_or("");
        if !asked_rv.is_empty() && Some(asked_rv) != str_at(&old, &["metadata", "resourceVersion"])
        {
            return Err(ApiError::conflict(kind.group, kind.plural, name));
        }
        let meta = metadata_mut(&mut body);
        meta.insert("name".into(), name.into());
        for field in ["uid", "creationTimestamp", "deletionTimestamp", "namespace"] {
            match old["metadata"].get(field) {
                Some(v) => meta.insert(field.into(), v.clone()),
                None => meta.remove(field),
            };
        }
        set(&mut body, "kind", kind.kind.into());
        set(&mut body, "apiVersion", kind.api_version().into());
        if matches!(kind.plural, "pods" | "namespaces") {
            if let Some(status) = old.get("status") {
                set(&mut body, "status", status.clone());
            }
        }
        if kind.plural == "pods" {
            if let Some(spec) = old.get("spec") {
                set(&mut body, "spec", spec.clone());
            }
        }
        Ok(self.commit(kind, ns, EventType::Modified, body, Some(old)))
    }

    /// Apply a JSON merge patch (PATCH).
    pub fn patch(
        &mut self,
        kind: &'static Kind,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Value, ApiError> {
        let mut merged = self.get(kind, ns, name)?;
        merge_patch(&mut merged, patch);
        if let Some(m) = merged.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        self.replace(kind, ns, name, merged)
    }
}

/// Whether an object matches label and field selectors.
pub fn matches(object: &Value, labels: &LabelSelector, fields: &FieldSelector) -> bool {
    labels.matches(object["metadata"].get("labels").and_then(Value::as_object))
        && fields.matches(object)
}

/// The served kind named `plural`; only called with the names in
/// [`kinds::KINDS`].
fn lookup(plural: &str) -> &'static Kind {
    match kinds::by_plural(plural) {
        Some(k) => k,
        None => unreachable!("{plural} is a served kind"),
    }
}

/// A body of another kind is a 400, as the API server answers; top-level
/// fields the kind's schema does not have are dropped, as it drops them.
fn check_body(kind: &'static Kind, body: &mut Value) -> Result<(), ApiError> {
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request is not a JSON object",
        ));
    }
    if let Some(k) = body.get("kind").and_then(Value::as_str) {
        if k != kind.kind {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({}), or kind {k} is not {}",
                body.get("apiVersion").and_then(Value::as_str).unwrap_or(""),
                kind.api_version(),
                kind.kind
            )));
        }
    }
    if let Some(map) = body.as_object_mut() {
        map.retain(|field, _| {
            matches!(field.as_str(), "apiVersion" | "kind" | "metadata")
                || kind.fields.contains(&field.as_str())
        });
    }
    Ok(())
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(patch) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Some(t) = target.as_object_mut() {
        for (k, v) in patch {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}
