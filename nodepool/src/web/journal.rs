//! The durable record of the node requests made through the HTTP API.
//!
//! A node request lives as long as the session that wrote it (upstream's
//! protocol: an ephemeral record), and the API's background tasks live in
//! the daemon's memory. So that a request made through the API survives a
//! kill -9 of the daemon, every change of it is written to a small JSON
//! file in the state directory (`api-requests.json`, written to a temporary
//! file and renamed, so a crash leaves the old or the new file whole). At
//! start the daemon reads it back and takes every request up again: a
//! request still waiting is followed (and written again if its record died
//! with the old session), the nodes of a fulfilled one are locked again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

/// The file name in the state directory.
pub(crate) const FILE_NAME: &str = "api-requests.json";

/// How long a finished (failed or released) request is kept for `GET`.
const KEEP_FINISHED_SECS: f64 = 24.0 * 3600.0;

/// What the journal keeps of one API request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The labels asked for.
    pub(crate) labels: Vec<String>,
    /// The requestor name.
    pub(crate) requestor: String,
    /// Precedence ("100").
    pub(crate) priority: String,
    /// Order among requests of the same precedence.
    pub(crate) relative_priority: i64,
    /// The node request in the store that serves it now (the API id's own
    /// at first; a new one when the record died with an old session).
    pub(crate) request_id: String,
    /// `waiting`, `fulfilled`, `failed` or `released`.
    pub(crate) phase: String,
    /// The nodes, once fulfilled.
    #[serde(default)]
    pub(crate) nodes: Vec<String>,
    /// Why it failed.
    #[serde(default)]
    pub(crate) error: Option<String>,
    /// When the phase last changed (seconds since the epoch).
    pub(crate) changed: f64,
}

/// The journal file of a state directory.
#[derive(Debug, Clone)]
pub(crate) struct Journal {
    path: PathBuf,
}

impl Journal {
    /// The journal in `state_dir`.
    pub(crate) fn in_dir(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join(FILE_NAME),
        }
    }

    /// Every entry by API id; an unreadable file is logged and read as
    /// empty (never a crash loop).
    pub(crate) fn load(&self) -> BTreeMap<String, Entry> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "cannot read the API request journal");
                return BTreeMap::new();
            }
        };
        match serde_json::from_str(&text) {
            Ok(entries) => entries,
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "the API request journal is corrupt; ignoring it");
                BTreeMap::new()
            }
        }
    }

    /// Write `entries` (finished ones older than a day left out).
    pub(crate) fn save(&self, entries: &BTreeMap<String, Entry>, now: f64) {
        let kept: BTreeMap<&String, &Entry> = entries
            .iter()
            .filter(|(_, e)| {
                !matches!(e.phase.as_str(), "failed" | "released")
                    || now - e.changed < KEEP_FINISHED_SECS
            })
            .collect();
        let result = serde_json::to_vec_pretty(&kept)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                let tmp = self.path.with_extension("json.tmp");
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, &self.path)
            });
        if let Err(e) = result {
            warn!(path = %self.path.display(), error = %e, "cannot write the API request journal");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(phase: &str, changed: f64) -> Entry {
        Entry {
            labels: vec!["small".into()],
            requestor: "ci".into(),
            priority: "100".into(),
            relative_priority: 0,
            request_id: "100-0000000001".into(),
            phase: phase.into(),
            nodes: Vec::new(),
            error: None,
            changed,
        }
    }

    #[test]
    fn entries_survive_a_save_and_old_finished_ones_are_dropped() {
        let dir = tempfile::tempdir().expect("dir");
        let journal = Journal::in_dir(dir.path());
        assert!(journal.load().is_empty());
        let now = 1_000_000.0;
        let entries = BTreeMap::from([
            ("100-0000000001".to_string(), entry("waiting", now - 1e6)),
            ("100-0000000002".to_string(), entry("released", now - 10.0)),
            (
                "100-0000000003".to_string(),
                entry("failed", now - 2.0 * 86_400.0),
            ),
        ]);
        journal.save(&entries, now);
        let loaded = journal.load();
        assert_eq!(
            loaded.keys().collect::<Vec<_>>(),
            ["100-0000000001", "100-0000000002"]
        );
        assert_eq!(loaded["100-0000000001"], entries["100-0000000001"]);
    }

    #[test]
    fn a_corrupt_journal_reads_as_empty() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join(FILE_NAME), "{not json").expect("write");
        assert!(Journal::in_dir(dir.path()).load().is_empty());
    }
}
