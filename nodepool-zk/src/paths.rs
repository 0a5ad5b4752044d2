//! Upstream nodepool's ZooKeeper layout (`nodepool/zk/zookeeper.py`), and
//! the mapping of changed paths to [`StoreEvent`]s.

use nodepool_core::store::{Change, LockTarget, StoreEvent};

/// Node records: `/nodepool/nodes/<sequence>`.
pub(crate) const NODE_ROOT: &str = "/nodepool/nodes";
/// Node requests: `/nodepool/requests/<priority>-<sequence>`.
pub(crate) const REQUEST_ROOT: &str = "/nodepool/requests";
/// Node request locks: `/nodepool/requests-lock/<request id>`.
pub(crate) const REQUEST_LOCK_ROOT: &str = "/nodepool/requests-lock";
/// Images: `/nodepool/images/<image>/...`.
pub(crate) const IMAGE_ROOT: &str = "/nodepool/images";
/// Component registry: `/nodepool/components/<kind>/<name><sequence>`.
pub(crate) const COMPONENT_ROOT: &str = "/nodepool/components";

/// nodepool-rs's own coordination locks (the `min-ready` leader):
/// `/nodepool/coordination/locks/<name>`. Upstream reads nothing here.
pub(crate) const COORDINATION_LOCK_ROOT: &str = nodepool_core::store::COORDINATION_LOCK_ROOT;
/// nodepool-rs's admission counters: `/nodepool/coordination/admission/<key>`,
/// empty znodes whose data version counts admissions (not watched).
pub(crate) const ADMISSION_ROOT: &str = "/nodepool/coordination/admission";

/// The roots watched (recursively) and made at connect.
pub(crate) const WATCHED_ROOTS: [&str; 6] = [
    NODE_ROOT,
    REQUEST_ROOT,
    REQUEST_LOCK_ROOT,
    IMAGE_ROOT,
    COMPONENT_ROOT,
    COORDINATION_LOCK_ROOT,
];

/// The admission counter of `key`; `/` in a key is escaped, so a provider
/// name makes one znode.
pub(crate) fn admission(key: &str) -> String {
    format!(
        "{ADMISSION_ROOT}/{}",
        key.replace('%', "%25").replace('/', "%2F")
    )
}

/// The name kazoo's `Lock` puts between a contender's uuid and its sequence.
pub(crate) const LOCK_NAME: &str = "__lock__";

pub(crate) fn node(id: &str) -> String {
    format!("{NODE_ROOT}/{id}")
}

pub(crate) fn request(id: &str) -> String {
    format!("{REQUEST_ROOT}/{id}")
}

pub(crate) fn request_lock(id: &str) -> String {
    format!("{REQUEST_LOCK_ROOT}/{id}")
}

pub(crate) fn image_pause(image: &str) -> String {
    format!("{IMAGE_ROOT}/{image}/pause")
}

pub(crate) fn image_build_request(image: &str) -> String {
    format!("{IMAGE_ROOT}/{image}/request-build")
}

pub(crate) fn builds(image: &str) -> String {
    format!("{IMAGE_ROOT}/{image}/builds")
}

pub(crate) fn build(image: &str, build: &str) -> String {
    format!("{IMAGE_ROOT}/{image}/builds/{build}")
}

pub(crate) fn build_providers(image: &str, build: &str) -> String {
    format!("{IMAGE_ROOT}/{image}/builds/{build}/providers")
}

pub(crate) fn uploads(image: &str, build: &str, provider: &str) -> String {
    format!("{IMAGE_ROOT}/{image}/builds/{build}/providers/{provider}/images")
}

pub(crate) fn upload(image: &str, build: &str, provider: &str, upload: &str) -> String {
    format!("{IMAGE_ROOT}/{image}/builds/{build}/providers/{provider}/images/{upload}")
}

pub(crate) fn components(kind: &str) -> String {
    format!("{COMPONENT_ROOT}/{kind}")
}

pub(crate) fn component(kind: &str, name: &str) -> String {
    format!("{COMPONENT_ROOT}/{kind}/{name}")
}

/// The name a component was registered under, from its znode's name:
/// upstream (and we) register `<name>` as an ephemeral sequential znode, so
/// the znode is the name followed by ten sequence digits. A znode without
/// them (written by an older nodepool-rs) is its own name.
pub(crate) fn component_name(znode: &str) -> &str {
    let n = znode.len();
    if n > 10
        && znode.is_char_boundary(n - 10)
        && znode[n - 10..].bytes().all(|b| b.is_ascii_digit())
    {
        &znode[..n - 10]
    } else {
        znode
    }
}

/// The last segment of a path.
pub(crate) fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The sequence part of a kazoo lock contender's name, as kazoo's regex
/// `(?:__lock__)(-?\d{10})$` finds it; `None` for other children.
pub(crate) fn contender_sequence(name: &str) -> Option<&str> {
    let n = name.len();
    if n < 10 || !name.is_char_boundary(n - 10) {
        return None;
    }
    let (before, digits) = name.split_at(n - 10);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if before.ends_with(LOCK_NAME) {
        Some(digits)
    } else if before.ends_with("__lock__-") {
        Some(&name[n - 11..])
    } else {
        None
    }
}

/// The lock a contender path (`<lock path>/<contender>`) belongs to.
fn lock_of_contender(path: &str) -> Option<LockTarget> {
    let (lock_path, contender) = path.rsplit_once('/')?;
    contender_sequence(contender)?;
    LockTarget::from_path(lock_path)
}

/// The event a change of `path` announces, if any. `created_or_changed` is
/// false for a deletion.
pub(crate) fn event_for(path: &str, created_or_changed: bool) -> Option<StoreEvent> {
    let change = if created_or_changed {
        Change::Put
    } else {
        Change::Deleted
    };
    if let Some(target) = lock_of_contender(path) {
        return Some(StoreEvent::Lock { target, change });
    }
    let parts: Vec<&str> = path.strip_prefix("/nodepool/")?.split('/').collect();
    if parts.contains(&"lock") {
        // A lock's own directory: nothing to announce.
        return None;
    }
    match parts.as_slice() {
        ["nodes", id] => Some(StoreEvent::Node {
            id: (*id).to_owned(),
            change,
        }),
        ["requests", id] => Some(StoreEvent::Request {
            id: (*id).to_owned(),
            change,
        }),
        ["images", image, ..] => Some(StoreEvent::Image {
            image: (*image).to_owned(),
        }),
        ["components", kind, _name] => Some(StoreEvent::Component {
            kind: (*kind).to_owned(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_names_drop_the_sequence_upstream_appends() {
        assert_eq!(
            component_name("nl01.example.org0000000003"),
            "nl01.example.org"
        );
        assert_eq!(
            component_name("host-a-fake-main-ab120000000012"),
            "host-a-fake-main-ab12"
        );
        assert_eq!(component_name("legacy-name"), "legacy-name");
        assert_eq!(component_name("0000000001"), "0000000001");
    }

    #[test]
    fn contender_sequence_follows_kazoo_naming() {
        assert_eq!(
            contender_sequence("0f1e2d3c4b5a69788796a5b4c3d2e1f0__lock__0000000007"),
            Some("0000000007")
        );
        assert_eq!(contender_sequence("abc__lock__-000000001"), None);
        assert_eq!(
            contender_sequence("abc__lock__-0000000001"),
            Some("-0000000001")
        );
        assert_eq!(contender_sequence("abc__rlock__0000000001"), None);
        assert_eq!(contender_sequence("lock"), None);
        assert_eq!(contender_sequence("abc__lock__00000000x1"), None);
    }

    #[test]
    fn record_paths_map_to_record_events() {
        assert_eq!(
            event_for("/nodepool/nodes/0000000001", true),
            Some(StoreEvent::Node {
                id: "0000000001".into(),
                change: Change::Put
            })
        );
        assert_eq!(
            event_for("/nodepool/requests/100-0000000004", false),
            Some(StoreEvent::Request {
                id: "100-0000000004".into(),
                change: Change::Deleted
            })
        );
        assert_eq!(
            event_for(
                "/nodepool/images/ubuntu/builds/abc/providers/p/images/0000000001",
                true
            ),
            Some(StoreEvent::Image {
                image: "ubuntu".into()
            })
        );
        assert_eq!(
            event_for("/nodepool/components/launcher/host-1", false),
            Some(StoreEvent::Component {
                kind: "launcher".into()
            })
        );
    }

    #[test]
    fn lock_directories_and_roots_announce_nothing() {
        assert_eq!(event_for("/nodepool/nodes/0000000001/lock", true), None);
        assert_eq!(event_for("/nodepool/images/ubuntu/builds/lock", true), None);
        assert_eq!(
            event_for("/nodepool/requests-lock/100-0000000001", true),
            None
        );
        assert_eq!(event_for("/nodepool/nodes", true), None);
        assert_eq!(event_for("/nodepool/components/launcher", true), None);
        assert_eq!(event_for("/elsewhere/x", true), None);
    }

    #[test]
    fn contender_changes_announce_their_lock() {
        let contender = "/nodepool/nodes/0000000001/lock/aa__lock__0000000000";
        assert_eq!(
            event_for(contender, true),
            Some(StoreEvent::Lock {
                target: LockTarget::Node("0000000001".into()),
                change: Change::Put
            })
        );
        assert_eq!(
            event_for(
                "/nodepool/requests-lock/100-0000000001/aa__lock__0000000003",
                false
            ),
            Some(StoreEvent::Lock {
                target: LockTarget::Request("100-0000000001".into()),
                change: Change::Deleted
            })
        );
    }
}
