//! The records of a memory backend, shared by all its sessions.

use std::collections::{BTreeMap, HashMap, HashSet};

use tokio::sync::broadcast;

use super::locks::LockQueue;
use crate::model::{Component, ImageBuild, ImageUpload, Node, NodeRequest};
use crate::store::{AdmissionToken, Change, LockTarget, StoreEvent};
use crate::{Error, Result};

/// Identifies one session of a backend.
pub(super) type SessionId = u64;

/// A record that dies with the session that made it.
#[derive(Debug)]
pub(super) struct Ephemeral<T> {
    pub(super) record: T,
    pub(super) owner: SessionId,
}

/// Everything under `/nodepool/images/<image>`.
#[derive(Debug, Default)]
pub(super) struct ImageRecord {
    pub(super) paused: bool,
    pub(super) build_requested: bool,
    pub(super) builds: BTreeMap<String, BuildRecord>,
}

/// One build and its uploads, by provider.
#[derive(Debug)]
pub(super) struct BuildRecord {
    pub(super) build: ImageBuild,
    pub(super) providers: BTreeMap<String, ProviderUploads>,
}

/// The uploads of one build to one provider, with their sequence counter.
#[derive(Debug, Default)]
pub(super) struct ProviderUploads {
    pub(super) next_seq: u64,
    pub(super) uploads: BTreeMap<String, ImageUpload>,
}

/// The whole backend, behind one mutex. Events are sent while the mutex is
/// held, so watchers see changes in the order they were applied.
#[derive(Debug)]
pub(super) struct State {
    pub(super) events: broadcast::Sender<StoreEvent>,
    pub(super) next_session: SessionId,
    pub(super) closed: HashSet<SessionId>,
    pub(super) next_node_seq: u64,
    pub(super) next_request_seq: u64,
    pub(super) next_contender_seq: u64,
    pub(super) nodes: BTreeMap<String, Node>,
    pub(super) requests: BTreeMap<String, Ephemeral<NodeRequest>>,
    pub(super) images: BTreeMap<String, ImageRecord>,
    /// kind -> name -> registration.
    pub(super) components: BTreeMap<String, BTreeMap<String, Ephemeral<Component>>>,
    pub(super) locks: HashMap<LockTarget, LockQueue>,
    /// Admission counters: key -> version (absent: -1).
    pub(super) admissions: HashMap<String, i64>,
}

/// Formats a ZooKeeper-style sequence number.
pub(super) fn sequence_id(seq: u64) -> String {
    format!("{seq:010}")
}

impl State {
    pub(super) fn new(event_capacity: usize) -> Self {
        let (events, _) = broadcast::channel(event_capacity.max(1));
        Self {
            events,
            next_session: 0,
            closed: HashSet::new(),
            next_node_seq: 0,
            next_request_seq: 0,
            next_contender_seq: 0,
            nodes: BTreeMap::new(),
            admissions: HashMap::new(),
            requests: BTreeMap::new(),
            images: BTreeMap::new(),
            components: BTreeMap::new(),
            locks: HashMap::new(),
        }
    }

    /// Announces a change; nobody listening is fine.
    pub(super) fn emit(&self, event: StoreEvent) {
        let _ = self.events.send(event);
    }

    pub(super) fn new_session(&mut self) -> SessionId {
        let id = self.next_session;
        self.next_session += 1;
        id
    }

    /// Fails with [`Error::StoreUnavailable`] once `session` was closed.
    pub(super) fn ensure_open(&self, session: SessionId) -> Result<()> {
        if self.closed.contains(&session) {
            return Err(Error::StoreUnavailable(format!(
                "memory store session {session} is closed"
            )));
        }
        Ok(())
    }

    // --- nodes ---

    /// The version of admission counter `key`.
    pub(super) fn admission_version(&self, key: &str) -> i64 {
        self.admissions.get(key).copied().unwrap_or(-1)
    }

    /// Create `nodes` if no counter of `tokens` moved, bumping them all.
    pub(super) fn create_nodes_admitted(
        &mut self,
        nodes: &[Node],
        tokens: &[AdmissionToken],
    ) -> Result<Vec<String>> {
        if let Some(moved) = tokens
            .iter()
            .find(|t| self.admission_version(&t.key) != t.version)
        {
            return Err(Error::VersionConflict {
                target: format!("admission counter {}", moved.key),
                expected: moved.version,
            });
        }
        for t in tokens {
            self.admissions.insert(t.key.clone(), t.version + 1);
        }
        Ok(nodes.iter().map(|n| self.create_node(n)).collect())
    }

    pub(super) fn create_node(&mut self, node: &Node) -> String {
        let id = sequence_id(self.next_node_seq);
        self.next_node_seq += 1;
        let mut record = node.clone();
        record.id = id.clone();
        self.nodes.insert(id.clone(), record);
        self.emit(StoreEvent::Node {
            id: id.clone(),
            change: Change::Put,
        });
        id
    }

    pub(super) fn update_node(&mut self, node: &Node) -> Result<()> {
        let slot = self
            .nodes
            .get_mut(&node.id)
            .ok_or_else(|| Error::NodeNotFound {
                id: node.id.clone(),
            })?;
        *slot = node.clone();
        self.emit(StoreEvent::Node {
            id: node.id.clone(),
            change: Change::Put,
        });
        Ok(())
    }

    pub(super) fn delete_node(&mut self, id: &str) {
        self.drop_lock(&LockTarget::Node(id.to_owned()));
        if self.nodes.remove(id).is_some() {
            self.emit(StoreEvent::Node {
                id: id.to_owned(),
                change: Change::Deleted,
            });
        }
    }

    // --- requests ---

    pub(super) fn create_request(
        &mut self,
        session: SessionId,
        request: &NodeRequest,
        priority: &str,
    ) -> Result<String> {
        if priority.is_empty() || !priority.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::InvalidInput {
                message: format!(
                    "invalid node request priority {priority:?}: expected digits such as \"100\""
                ),
            });
        }
        let id = format!("{priority}-{}", sequence_id(self.next_request_seq));
        self.next_request_seq += 1;
        let mut record = request.clone();
        record.id = id.clone();
        self.requests.insert(
            id.clone(),
            Ephemeral {
                record,
                owner: session,
            },
        );
        self.emit(StoreEvent::Request {
            id: id.clone(),
            change: Change::Put,
        });
        Ok(id)
    }

    pub(super) fn update_request(&mut self, request: &NodeRequest) -> Result<()> {
        let slot = self
            .requests
            .get_mut(&request.id)
            .ok_or_else(|| Error::RequestNotFound {
                id: request.id.clone(),
            })?;
        slot.record = request.clone();
        self.emit(StoreEvent::Request {
            id: request.id.clone(),
            change: Change::Put,
        });
        Ok(())
    }

    pub(super) fn delete_request(&mut self, id: &str) {
        self.drop_lock(&LockTarget::Request(id.to_owned()));
        self.remove_request(id);
    }

    fn remove_request(&mut self, id: &str) {
        if self.requests.remove(id).is_some() {
            self.emit(StoreEvent::Request {
                id: id.to_owned(),
                change: Change::Deleted,
            });
        }
    }

    // --- images ---

    fn image_changed(&self, image: &str) {
        self.emit(StoreEvent::Image {
            image: image.to_owned(),
        });
    }

    pub(super) fn create_build(&mut self, image: &str, build: &ImageBuild) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut record = build.clone();
        record.id = id.clone();
        record.image_name = image.to_owned();
        self.images
            .entry(image.to_owned())
            .or_default()
            .builds
            .insert(
                id.clone(),
                BuildRecord {
                    build: record,
                    providers: BTreeMap::new(),
                },
            );
        self.image_changed(image);
        id
    }

    fn build_mut(&mut self, image: &str, build_id: &str) -> Result<&mut BuildRecord> {
        self.images
            .get_mut(image)
            .and_then(|i| i.builds.get_mut(build_id))
            .ok_or_else(|| Error::NotFound {
                kind: "image build",
                id: format!("{image}/{build_id}"),
            })
    }

    pub(super) fn get_build(&self, image: &str, build_id: &str) -> Option<ImageBuild> {
        self.images
            .get(image)
            .and_then(|i| i.builds.get(build_id))
            .map(|b| b.build.clone())
    }

    pub(super) fn update_build(&mut self, image: &str, build: &ImageBuild) -> Result<()> {
        let mut record = build.clone();
        record.image_name = image.to_owned();
        self.build_mut(image, &build.id)?.build = record;
        self.image_changed(image);
        Ok(())
    }

    pub(super) fn delete_build(&mut self, image: &str, build_id: &str) {
        let removed = self
            .images
            .get_mut(image)
            .and_then(|i| i.builds.remove(build_id));
        // Locks live under the build's path and go with it.
        let doomed: Vec<LockTarget> = self
            .locks
            .keys()
            .filter(|t| lock_is_under_build(t, image, build_id))
            .cloned()
            .collect();
        for target in doomed {
            self.drop_lock(&target);
        }
        if removed.is_some() {
            self.image_changed(image);
        }
    }

    pub(super) fn list_builds(&self, image: &str) -> Vec<ImageBuild> {
        self.images
            .get(image)
            .map(|i| i.builds.values().map(|b| b.build.clone()).collect())
            .unwrap_or_default()
    }

    pub(super) fn create_upload(
        &mut self,
        image: &str,
        build_id: &str,
        provider: &str,
        upload: &ImageUpload,
    ) -> Result<String> {
        let build = self.build_mut(image, build_id)?;
        let uploads = build.providers.entry(provider.to_owned()).or_default();
        let id = sequence_id(uploads.next_seq);
        uploads.next_seq += 1;
        let mut record = upload.clone();
        record.id = id.clone();
        record.image_name = image.to_owned();
        record.build_id = build_id.to_owned();
        record.provider_name = provider.to_owned();
        uploads.uploads.insert(id.clone(), record);
        self.image_changed(image);
        Ok(id)
    }

    pub(super) fn update_upload(&mut self, upload: &ImageUpload) -> Result<()> {
        let not_found = || Error::NotFound {
            kind: "image upload",
            id: format!(
                "{}/{}/{}/{}",
                upload.image_name, upload.build_id, upload.provider_name, upload.id
            ),
        };
        let slot = self
            .build_mut(&upload.image_name, &upload.build_id)
            .map_err(|_| not_found())?
            .providers
            .get_mut(&upload.provider_name)
            .and_then(|p| p.uploads.get_mut(&upload.id))
            .ok_or_else(not_found)?;
        *slot = upload.clone();
        self.image_changed(&upload.image_name);
        Ok(())
    }

    pub(super) fn delete_upload(
        &mut self,
        image: &str,
        build_id: &str,
        provider: &str,
        upload_id: &str,
    ) {
        let removed = self
            .images
            .get_mut(image)
            .and_then(|i| i.builds.get_mut(build_id))
            .and_then(|b| b.providers.get_mut(provider))
            .and_then(|p| p.uploads.remove(upload_id));
        self.drop_lock(&LockTarget::Upload {
            image: image.to_owned(),
            build: build_id.to_owned(),
            provider: provider.to_owned(),
            upload: upload_id.to_owned(),
        });
        if removed.is_some() {
            self.image_changed(image);
        }
    }

    pub(super) fn list_uploads(&self, image: &str, build_id: &str) -> Vec<ImageUpload> {
        self.images
            .get(image)
            .and_then(|i| i.builds.get(build_id))
            .map(|b| {
                b.providers
                    .values()
                    .flat_map(|p| p.uploads.values().cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sets a flag of an image; records the image only when a flag is set.
    pub(super) fn set_image_flag(
        &mut self,
        image: &str,
        value: bool,
        flag: fn(&mut ImageRecord) -> &mut bool,
    ) {
        let record = match (self.images.get_mut(image), value) {
            (Some(record), _) => record,
            (None, false) => return,
            (None, true) => self.images.entry(image.to_owned()).or_default(),
        };
        let slot = flag(record);
        if *slot != value {
            *slot = value;
            self.image_changed(image);
        }
    }

    // --- components ---

    pub(super) fn register_component(
        &mut self,
        session: SessionId,
        kind: &str,
        name: &str,
        component: &Component,
    ) {
        let mut record = component.clone();
        record.kind = kind.to_owned();
        record.name = name.to_owned();
        let registry = self.components.entry(kind.to_owned()).or_default();
        match registry.get_mut(name) {
            // Like a ZooKeeper `set`: the data changes, the owner stays.
            Some(existing) => existing.record = record,
            None => {
                registry.insert(
                    name.to_owned(),
                    Ephemeral {
                        record,
                        owner: session,
                    },
                );
            }
        }
        self.emit(StoreEvent::Component {
            kind: kind.to_owned(),
        });
    }

    pub(super) fn unregister_component(&mut self, kind: &str, name: &str) {
        let removed = self
            .components
            .get_mut(kind)
            .and_then(|registry| registry.remove(name));
        if removed.is_some() {
            self.emit(StoreEvent::Component {
                kind: kind.to_owned(),
            });
        }
    }

    pub(super) fn list_components(&self, kind: &str) -> Vec<Component> {
        self.components
            .get(kind)
            .map(|registry| registry.values().map(|c| c.record.clone()).collect())
            .unwrap_or_default()
    }

    // --- sessions ---

    /// Ends `session`: its locks are released (waiters woken), its
    /// ephemeral records deleted. Closing twice does nothing.
    pub(super) fn close_session(&mut self, session: SessionId) {
        if !self.closed.insert(session) {
            return;
        }
        let requests: Vec<String> = self
            .requests
            .iter()
            .filter(|(_, r)| r.owner == session)
            .map(|(id, _)| id.clone())
            .collect();
        for id in requests {
            self.remove_request(&id);
        }
        let mut kinds = Vec::new();
        for (kind, registry) in &mut self.components {
            let before = registry.len();
            registry.retain(|_, c| c.owner != session);
            if registry.len() != before {
                kinds.push(kind.clone());
            }
        }
        for kind in kinds {
            self.emit(StoreEvent::Component { kind });
        }
        self.release_session_locks(session);
    }
}

/// Whether a lock lives under `/nodepool/images/<image>/builds/<build_id>`.
fn lock_is_under_build(target: &LockTarget, image: &str, build_id: &str) -> bool {
    match target {
        LockTarget::Build {
            image: i, build: b, ..
        }
        | LockTarget::ProviderUploads {
            image: i, build: b, ..
        }
        | LockTarget::Upload {
            image: i, build: b, ..
        } => i == image && b == build_id,
        LockTarget::Node(_)
        | LockTarget::Request(_)
        | LockTarget::ImageBuilds(_)
        | LockTarget::Coordination(_) => false,
    }
}
