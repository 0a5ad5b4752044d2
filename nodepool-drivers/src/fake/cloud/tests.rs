//! Tests of the fake cloud: upstream defaults, quota, boot delay, faults.

use super::*;
use nodepool_core::ErrorKind;

fn request(n: u32) -> CreateRequest {
    CreateRequest {
        provider: "fake-provider".to_string(),
        name: format!("np{n:010}"),
        image: Some(ImageRef::Cloud(FAKE_IMAGE_NAME.to_string())),
        resources: FakeCloudSettings::default().flavors[0].resources(),
        metadata: BTreeMap::from([("nodepool_node_id".to_string(), format!("{n:010}"))]),
        az: None,
    }
}

fn with_faults(faults: FaultSettings) -> FakeCloud {
    FakeCloud::new(FakeCloudSettings {
        faults,
        ..FakeCloudSettings::default()
    })
}

#[test]
fn defaults_match_upstream_fake_cloud() {
    let s = FakeCloudSettings::default();
    assert_eq!(s.boot_delay, Duration::from_millis(100));
    assert_eq!(
        (s.max_instances, s.max_cores, s.max_ram),
        (20, 100, 1_000_000)
    );
    let flavor = s.find_flavor(None, Some(8192)).map(|f| f.name.as_str());
    assert_eq!(flavor, Some("Fake Flavor"));
    assert_eq!(
        s.flavors[0].resources(),
        Resources {
            instances: Some(1),
            cores: Some(4),
            ram: Some(8192),
            ..Resources::default()
        }
    );
    assert_eq!(s.azs, vec!["az1", "az2"]);
    let images = FakeCloud::default().images();
    assert_eq!(images.len(), 1);
    assert_eq!(
        (images[0].external_id.as_str(), images[0].name.as_str()),
        (FAKE_IMAGE_ID, FAKE_IMAGE_NAME)
    );
}

#[test]
fn finds_flavor_by_ram_and_name_like_openstack_driver() {
    let s = FakeCloudSettings::default();
    assert_eq!(
        s.find_flavor(Some("Unreal"), Some(1))
            .map(|f| f.name.as_str()),
        Some("Unreal Flavor")
    );
    assert_eq!(
        s.find_flavor(Some("Unreal Flavor"), None)
            .map(|f| f.name.as_str()),
        Some("Unreal Flavor")
    );
    assert!(s.find_flavor(None, Some(16384)).is_none());
    assert!(
        s.find_flavor(Some("Unreal"), None).is_none(),
        "without min-ram the name must match exactly"
    );
}

#[tokio::test(start_paused = true)]
async fn instance_is_building_until_boot_delay_passed() {
    let cloud = FakeCloud::default();
    let created = cloud.create(request(1)).expect("create");
    assert_eq!(created.state, Some(InstanceState::Building));
    tokio::time::advance(Duration::from_millis(99)).await;
    let id = created.external_id.as_str();
    assert_eq!(
        cloud.get(id).and_then(|i| i.state),
        Some(InstanceState::Building)
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        cloud.get(id).and_then(|i| i.state),
        Some(InstanceState::Active)
    );
    assert_eq!(cloud.active_at(id), cloud.settles_at(id));
}

#[tokio::test(start_paused = true)]
async fn instance_keeps_request_data() {
    let cloud = FakeCloud::default();
    let created = cloud.create(request(7)).expect("create");
    assert_eq!(
        created.metadata.get("nodepool_node_id").map(String::as_str),
        Some("0000000007")
    );
    assert_eq!(created.image_id.as_deref(), Some(FAKE_IMAGE_ID));
    assert_eq!(created.resources.cores, Some(4));
    assert!(created.interface_ip.is_some());
    assert!(matches!(created.az.as_deref(), Some("az1" | "az2")));
}

#[test]
fn create_fails_with_quota_exceeded_at_instance_limit() {
    let cloud = FakeCloud::default();
    for n in 0..20 {
        cloud.create(request(n)).expect("within quota");
    }
    match cloud.create(request(20)) {
        Err(Error::QuotaExceeded { provider, resource }) => {
            assert_eq!(
                (provider.as_str(), resource.as_str()),
                ("fake-provider", "instances")
            );
        }
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    assert_eq!(cloud.used().instances, Some(20));
}

#[test]
fn create_fails_with_quota_exceeded_at_core_and_ram_limits() {
    let cloud = FakeCloud::default();
    cloud.set_limits(20, 8, 1_000_000);
    cloud.create(request(1)).expect("4 of 8 cores");
    cloud.create(request(2)).expect("8 of 8 cores");
    assert!(
        matches!(cloud.create(request(3)), Err(Error::QuotaExceeded { resource, .. }) if resource == "cores")
    );
    cloud.set_limits(20, 100, 20_000);
    assert!(
        matches!(cloud.create(request(3)), Err(Error::QuotaExceeded { resource, .. }) if resource == "ram")
    );
}

#[test]
fn deleting_frees_quota_and_missing_delete_succeeds() {
    let cloud = FakeCloud::default();
    cloud.set_limits(1, 100, 1_000_000);
    let first = cloud.create(request(1)).expect("create");
    assert!(cloud.create(request(2)).is_err());
    cloud
        .delete("fake-provider", &first.external_id)
        .expect("delete");
    cloud
        .delete("fake-provider", &first.external_id)
        .expect("delete again");
    assert!(cloud.get(&first.external_id).is_none());
    cloud.create(request(2)).expect("quota freed");
}

#[test]
fn unknown_az_or_uploaded_image_is_refused() {
    let cloud = FakeCloud::default();
    let mut r = request(1);
    r.az = Some("az9".to_string());
    assert!(matches!(
        cloud.create(r),
        Err(Error::Cloud {
            kind: ErrorKind::Permanent,
            ..
        })
    ));
    let mut r = request(2);
    r.image = Some(ImageRef::Uploaded {
        diskimage: "d".to_string(),
        external_id: "nope".to_string(),
    });
    assert!(matches!(
        cloud.create(r),
        Err(Error::Cloud {
            kind: ErrorKind::NotFound,
            ..
        })
    ));
}

#[test]
fn boots_from_an_upload_another_processs_fake_cloud_made() {
    // The builder's process uploads; the launcher's has a cloud of its own.
    let builder = FakeCloud::default();
    let upload = builder
        .upload_image("fake-provider", "fake-image-0000000001", BTreeMap::new())
        .expect("upload");
    let launcher = FakeCloud::default();
    let mut r = request(1);
    r.image = Some(ImageRef::Uploaded {
        diskimage: "fake-image".to_string(),
        external_id: upload.clone(),
    });
    let instance = launcher.create(r).expect("boots from the other upload");
    assert_eq!(instance.image_id.as_deref(), Some(upload.as_str()));
}

/// Which of 200 creates fail, as a string of `x` and `.`.
fn error_pattern(cloud: &FakeCloud) -> String {
    (0..200)
        .map(|n| match cloud.create(request(n)) {
            Ok(i) => {
                // Deletes fail at the same rate: retry until the quota is free.
                while cloud.delete("fake-provider", &i.external_id).is_err() {}
                '.'
            }
            Err(Error::Cloud {
                kind: ErrorKind::Transient,
                ..
            }) => 'x',
            Err(e) => panic!("unexpected error {e}"),
        })
        .collect()
}

#[test]
fn error_rate_is_deterministic_for_a_seed() {
    let faults = |seed| FaultSettings {
        error_rate: 0.3,
        seed,
        ..FaultSettings::default()
    };
    let a = error_pattern(&with_faults(faults(7)));
    let b = error_pattern(&with_faults(faults(7)));
    let c = error_pattern(&with_faults(faults(8)));
    assert_eq!(a, b);
    assert_ne!(a, c);
    let failures = a.chars().filter(|&c| c == 'x').count();
    assert!(
        (30..=90).contains(&failures),
        "{failures} of 200 failed at rate 0.3"
    );
}

#[test]
fn quota_error_rate_fails_creates_under_quota() {
    let cloud = with_faults(FaultSettings {
        quota_error_rate: 1.0,
        ..FaultSettings::default()
    });
    assert!(matches!(
        cloud.create(request(1)),
        Err(Error::QuotaExceeded { .. })
    ));
    assert_eq!(cloud.used().instances, Some(0));
}

#[tokio::test(start_paused = true)]
async fn boot_failure_rate_ends_instances_in_error() {
    let cloud = with_faults(FaultSettings {
        boot_failure_rate: 1.0,
        ..FaultSettings::default()
    });
    let created = cloud.create(request(1)).expect("create");
    assert_eq!(created.state, Some(InstanceState::Building));
    tokio::time::advance(Duration::from_millis(100)).await;
    let state = cloud.get(&created.external_id).and_then(|i| i.state);
    assert!(matches!(state, Some(InstanceState::Error(_))), "{state:?}");
    assert!(cloud.active_at(&created.external_id).is_none());
}

#[tokio::test(start_paused = true)]
async fn timeout_rate_leaves_instances_building() {
    let cloud = with_faults(FaultSettings {
        timeout_rate: 1.0,
        ..FaultSettings::default()
    });
    let created = cloud.create(request(1)).expect("create");
    tokio::time::advance(Duration::from_secs(3600)).await;
    let state = cloud.get(&created.external_id).and_then(|i| i.state);
    assert_eq!(state, Some(InstanceState::Building));
    assert!(cloud.settles_at(&created.external_id).is_none());
}

#[test]
fn set_faults_applies_to_later_calls() {
    let cloud = FakeCloud::default();
    cloud.create(request(1)).expect("no faults yet");
    cloud.set_faults(FaultSettings {
        error_rate: 1.0,
        ..FaultSettings::default()
    });
    assert!(cloud.create(request(2)).is_err());
    assert!(cloud
        .upload_image("fake-provider", "img", BTreeMap::new())
        .is_err());
}

#[test]
fn images_upload_list_delete() {
    let cloud = FakeCloud::default();
    let meta = BTreeMap::from([("nodepool_build_id".to_string(), "1".to_string())]);
    let id = cloud
        .upload_image("fake-provider", "fake-image-0000000001", meta.clone())
        .expect("upload");
    let listed = cloud.images();
    let image = listed.iter().find(|i| i.external_id == id).expect("listed");
    assert_eq!(image.metadata, meta);
    cloud.delete_image("fake-provider", &id).expect("delete");
    cloud
        .delete_image("fake-provider", &id)
        .expect("delete missing");
    assert!(cloud.images().iter().all(|i| i.external_id != id));
}

#[test]
fn clones_share_one_cloud() {
    let cloud = FakeCloud::default();
    let other = cloud.clone();
    let created = cloud.create(request(1)).expect("create");
    assert!(other.get(&created.external_id).is_some());
    assert_eq!(other.instances().len(), 1);
}

#[test]
fn servers_keep_their_metadata_and_share_what_is_common() {
    let cloud = FakeCloud::new(FakeCloudSettings {
        max_instances: 100,
        max_cores: 1000,
        ..FakeCloudSettings::default()
    });
    let mut metadata = request(1).metadata;
    metadata.insert(
        "nodepool_provider_name".to_string(),
        "fake-provider".to_string(),
    );
    let created: Vec<Instance> = (1..=3)
        .map(|n| {
            let mut r = request(n);
            r.metadata.extend(metadata.clone());
            r.metadata
                .insert("nodepool_node_id".to_string(), format!("{n:010}"));
            r.az = Some("az1".to_string());
            cloud.create(r).expect("create")
        })
        .collect();
    for (n, instance) in (1..=3).zip(&created) {
        let got = cloud.get(&instance.external_id).expect("server");
        assert_eq!(got.metadata["nodepool_node_id"], format!("{n:010}"));
        assert_eq!(got.metadata["nodepool_provider_name"], "fake-provider");
        assert_eq!(got.az.as_deref(), Some("az1"));
        assert_eq!(got.metadata, instance.metadata);
    }
    assert_eq!(cloud.state().shapes.len(), 1, "one shape for three servers");
    for instance in &created {
        cloud
            .delete("fake-provider", &instance.external_id)
            .expect("delete");
    }
    assert!(
        cloud.state().shapes.is_empty(),
        "the shape goes with its servers"
    );
}

#[test]
fn ids_that_are_not_the_clouds_find_nothing() {
    let cloud = FakeCloud::default();
    let created = cloud.create(request(1)).expect("create");
    let n = created
        .external_id
        .strip_prefix("fake-")
        .expect("fake- prefix")
        .to_string();
    for id in [
        format!("fake-+{n}"),
        format!("fake-0{n}"),
        n.clone(),
        format!("fake-{}", n.to_uppercase()),
        "fake-".to_string(),
        "fake-zz".to_string(),
    ] {
        if id != created.external_id {
            assert!(cloud.get(&id).is_none(), "{id} is not a server");
        }
    }
    cloud
        .delete("fake-provider", "fake-+1")
        .expect("missing is fine");
    assert_eq!(cloud.instances().len(), 1);
}

#[test]
fn pages_walk_every_server_once_and_survive_a_deleted_marker() {
    let cloud = FakeCloud::new(FakeCloudSettings::default());
    let ids: Vec<String> = (0..5)
        .map(|n| cloud.create(request(n)).expect("create").external_id)
        .collect();
    let (first, next) = cloud.instances_page(None, 2);
    let first: Vec<String> = first.into_iter().map(|i| i.external_id).collect();
    assert_eq!(first, ids[..2]);
    assert_eq!(next.as_deref(), Some(ids[1].as_str()));
    // The marker's server goes between pages: the walk goes on after it.
    cloud.delete("fake-provider", &ids[1]).expect("delete");
    let (second, next) = cloud.instances_page(next.as_deref(), 2);
    let second: Vec<String> = second.into_iter().map(|i| i.external_id).collect();
    assert_eq!(second, ids[2..4]);
    let (last, next) = cloud.instances_page(next.as_deref(), 2);
    let last: Vec<String> = last.into_iter().map(|i| i.external_id).collect();
    assert_eq!(last, ids[4..]);
    assert_eq!(next, None, "the last page says so");
    // A page exactly as long as what is left ends the walk too.
    let (all, next) = cloud.instances_page(None, 4);
    assert_eq!(all.len(), 4);
    assert_eq!(next, None);
}

#[test]
fn a_cloud_made_after_a_restart_never_reuses_an_instance_id() {
    let before = FakeCloud::new(FakeCloudSettings::default());
    let old: Vec<String> = (0..3)
        .map(|n| before.create(request(n)).expect("create").external_id)
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(2));
    // The process restarted: a new, empty cloud.
    let after = FakeCloud::new(FakeCloudSettings::default());
    for n in 0..3 {
        let id = after.create(request(n)).expect("create").external_id;
        assert!(!old.contains(&id), "{id} was handed out before the restart");
        assert_eq!(serial(&id).map(external_id), Some(id.clone()));
    }
}
