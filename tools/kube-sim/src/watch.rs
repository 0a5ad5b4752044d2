//! Watches: `?watch=1` streams `{"type":…,"object":…}` lines, from a
//! resourceVersion (replaying the kept history, 410 when it is too old) or
//! from the current state (an `ADDED` per object first).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::api::table;
use crate::error::ApiError;
use crate::kinds::Kind;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{matches, Event, EventType};
use crate::Shared;

/// What a watch sees.
#[derive(Debug, Clone)]
pub struct WatchFilter {
    /// The kind watched.
    pub kind: &'static Kind,
    /// The namespace, or every one.
    pub namespace: Option<String>,
    /// The label selector.
    pub labels: LabelSelector,
    /// The field selector.
    pub fields: FieldSelector,
    /// Objects as one-row tables (kubectl's human output).
    pub table: bool,
}

impl WatchFilter {
    fn line(&self, event_type: EventType, object: &Value) -> Bytes {
        let object = if self.table {
            table::table(self.kind, std::slice::from_ref(object), None)
        } else {
            object.clone()
        };
        let mut text = json!({"type": event_type.as_str(), "object": object}).to_string();
        text.push('\n');
        Bytes::from(text)
    }

    /// The line this watch sends for `event`, if any: an object entering
    /// the selection is `ADDED`, one leaving it `DELETED`.
    pub fn render(&self, event: &Event) -> Option<Bytes> {
        if event.kind.plural != self.kind.plural {
            return None;
        }
        if self
            .namespace
            .as_ref()
            .is_some_and(|ns| *ns != event.namespace)
        {
            return None;
        }
        let now = matches(&event.object, &self.labels, &self.fields);
        let before = event
            .old
            .as_ref()
            .is_some_and(|o| matches(o, &self.labels, &self.fields));
        let event_type = match (event.event_type, before, now) {
            (EventType::Added, _, true) => EventType::Added,
            (EventType::Deleted, _, true) => EventType::Deleted,
            (EventType::Modified, true, true) => EventType::Modified,
            (EventType::Modified, false, true) => EventType::Added,
            (EventType::Modified, true, false) => EventType::Deleted,
            _ => return None,
        };
        Some(self.line(event_type, &event.object))
    }
}

struct Stream {
    backlog: VecDeque<Bytes>,
    rx: broadcast::Receiver<Event>,
    filter: WatchFilter,
    deadline: Option<Instant>,
}

impl Stream {
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(line) = self.backlog.pop_front() {
            return Some(line);
        }
        loop {
            let received = match self.deadline {
                Some(d) => tokio::time::timeout_at(d, self.rx.recv()).await.ok()?,
                None => self.rx.recv().await,
            };
            // A lagging or closed receiver ends the watch; the client
            // re-watches from its last resourceVersion.
            let event = received.ok()?;
            if let Some(line) = self.filter.render(&event) {
                return Some(line);
            }
        }
    }
}

/// Start a watch: events after `rv` when it is set and not `0`, else the
/// current objects as `ADDED` then every later change, until `timeout`.
pub fn start(
    shared: &Arc<Shared>,
    filter: WatchFilter,
    rv: Option<u64>,
    timeout: Option<Duration>,
) -> Result<Response, ApiError> {
    let (backlog, rx) = {
        let store = shared.lock();
        let backlog: VecDeque<Bytes> = match rv.filter(|rv| *rv > 0) {
            Some(rv) => store
                .events_since(rv)?
                .iter()
                .filter_map(|e| filter.render(e))
                .collect(),
            None => store
                .list(
                    filter.kind,
                    filter.namespace.as_deref(),
                    &filter.labels,
                    &filter.fields,
                )
                .iter()
                .map(|o| filter.line(EventType::Added, o))
                .collect(),
        };
        (backlog, store.subscribe())
    };
    let state = Stream {
        backlog,
        rx,
        filter,
        deadline: timeout.map(|t| Instant::now() + t),
    };
    let stream = futures::stream::unfold(state, |mut s| async move {
        let line = s.next().await?;
        Some((Ok::<_, Infallible>(line), s))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::bad_request(e.to_string()))
}
