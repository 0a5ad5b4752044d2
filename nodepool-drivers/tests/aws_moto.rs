//! The aws provider against moto's EC2: the provider conformance suite,
//! the tags, user data, spot and IMDS settings moto records, fleets,
//! image filters, quota and leaked volumes.

mod aws_support;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use nodepool_core::provider::{list_all_instances, LaunchSpec, Provider};
use nodepool_core::testing::provider::{launch_spec, provider_suite, SuiteConfig};
use nodepool_drivers::aws::client::Params;
use serde_json::json;

fn spec_for(provider: &dyn Provider, label: &str) -> LaunchSpec {
    let mut cfg = SuiteConfig::new("main", label);
    cfg.boot_timeout = Duration::from_secs(30);
    launch_spec(provider, &cfg)
}

#[tokio::test]
async fn aws_provider_passes_the_provider_suite_against_moto() {
    let Some(moto) = aws_support::start() else {
        return;
    };
    let (_, probe) = moto.provider(&aws_support::config("ami-x", "x", 10));
    let (image_id, image_name) = aws_support::stock_image(&probe).await;
    let (_, provider) = moto.provider(&aws_support::config(&image_id, &image_name, 10));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("suite.raw");
    std::fs::write(&file, vec![7u8; 1_300_000]).expect("image file");
    let mut cfg = SuiteConfig::new("main", "small");
    cfg.boot_timeout = Duration::from_secs(30);
    cfg.image_file = Some(file);
    cfg.image_format = "raw".to_string();
    let report = provider_suite(&provider, &cfg).await;
    for name in [
        "image_upload_list_delete",
        "create_then_get_then_delete",
        "wait_active_reaches_active",
        "instance_carries_metadata",
        "listed_instances_carry_nodepool_metadata",
        "paged_listing_lists_each_instance_once",
        "quota_reports_limits",
    ] {
        assert!(report.ran.contains(&name), "{name} did not run: {report:?}");
    }
}

#[tokio::test]
async fn instances_carry_upstreams_tags_userdata_and_options_in_moto() {
    let Some(moto) = aws_support::start() else {
        return;
    };
    let (_, probe) = moto.provider(&aws_support::config("ami-x", "x", 10));
    let (image_id, image_name) = aws_support::stock_image(&probe).await;
    let (_, provider) = moto.provider(&aws_support::config(&image_id, &image_name, 10));

    let mut spec = spec_for(&provider, "tagged");
    spec.request = Some(json!({"tenant_name": "tenant-1", "id": "200-0000000001"}));
    let created = provider.create_instance(&spec).await.expect("create");
    let item = aws_support::describe(&provider, &created.external_id).await;
    let tags = item.tags();
    assert_eq!(tags["nodepool_node_id"], spec.node_id);
    assert_eq!(tags["nodepool_pool_name"], "main");
    assert_eq!(tags["nodepool_provider_name"], "ec2-test");
    assert_eq!(
        tags["Name"], spec.hostname,
        "Name is the hostname, not the label's tag"
    );
    assert_eq!(tags["has-tags"], "True");
    assert_eq!(tags["dynamic-tenant"], "Tenant is tenant-1");
    assert_eq!(
        item.text_at(&["instanceType"]).as_deref(),
        Some("t3.medium")
    );
    assert_eq!(
        item.text_at(&["imageId"]).as_deref(),
        Some(image_id.as_str())
    );
    assert_eq!(item.text_at(&["keyName"]).as_deref(), Some("zuul"));
    assert_eq!(
        item.text_at(&["metadataOptions", "httpTokens"]).as_deref(),
        Some("required")
    );

    let mut p = Params::new();
    p.set("InstanceId", &created.external_id)
        .set("Attribute", "userData");
    let attr = provider
        .client()
        .ec2("DescribeInstanceAttribute", &p)
        .await
        .expect("DescribeInstanceAttribute");
    let encoded = attr.text_at(&["userData", "value"]).expect("user data");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64");
    assert_eq!(String::from_utf8_lossy(&decoded), "#!/bin/sh\necho hello");

    // The root volume carries the same tags and the label's size.
    let volume_id = item
        .items("blockDeviceMapping")
        .next()
        .and_then(|b| b.text_at(&["ebs", "volumeId"]))
        .expect("a root volume");
    let mut p = Params::new();
    p.set("VolumeId.1", &volume_id);
    let volumes = provider
        .client()
        .ec2("DescribeVolumes", &p)
        .await
        .expect("DescribeVolumes");
    let volume = volumes.items("volumeSet").next().expect("volume");
    assert_eq!(volume.text_at(&["size"]).as_deref(), Some("20"));
    assert_eq!(volume.tags()["nodepool_node_id"], spec.node_id);

    // Node data as upstream writes it.
    let active = provider
        .wait_active(&created.external_id, Duration::from_secs(30))
        .await
        .expect("active");
    assert_eq!(active.cloud.as_deref(), Some("AWS"));
    assert_eq!(active.region.as_deref(), Some("us-west-2"));
    assert!(active
        .az
        .as_deref()
        .is_some_and(|az| az.starts_with("us-west-2")));
    assert!(active.private_ipv4.is_some());
    assert_eq!(
        active.interface_ip,
        active.public_ipv4.clone().or(active.private_ipv4.clone())
    );
    assert_eq!(active.resources.cores, Some(1), "t3.medium: 1 core");
    assert_eq!(active.resources.ram, Some(4096));

    provider
        .delete_instance(&created.external_id)
        .await
        .expect("delete");
    let after = aws_support::describe(&provider, &created.external_id).await;
    assert_ne!(
        after.text_at(&["instanceState", "name"]).as_deref(),
        Some("running")
    );
    assert!(provider
        .get_instance(&created.external_id)
        .await
        .expect("get")
        .is_none_or(|i| i.state == Some(nodepool_core::provider::InstanceState::Deleting)));
}

#[tokio::test]
async fn spot_fleet_and_filtered_images_launch_in_moto() {
    let Some(moto) = aws_support::start() else {
        return;
    };
    let (_, probe) = moto.provider(&aws_support::config("ami-x", "x", 10));
    let (image_id, image_name) = aws_support::stock_image(&probe).await;
    let (_, provider) = moto.provider(&aws_support::config(&image_id, &image_name, 10));

    let spot = provider
        .create_instance(&spec_for(&provider, "spot"))
        .await
        .expect("spot");
    let item = aws_support::describe(&provider, &spot.external_id).await;
    assert_eq!(
        item.text_at(&["instanceLifecycle"]).as_deref(),
        Some("spot")
    );

    let filtered = provider
        .create_instance(&spec_for(&provider, "by-filters"))
        .await
        .expect("by filters");
    let item = aws_support::describe(&provider, &filtered.external_id).await;
    assert_eq!(
        item.text_at(&["imageId"]).as_deref(),
        Some(image_id.as_str())
    );

    let spec = spec_for(&provider, "fleet");
    let fleet = provider.create_instance(&spec).await.expect("fleet");
    // Upstream's node_properties: how each node was made.
    let props = |i: &nodepool_core::provider::Instance| {
        i.node_properties
            .as_ref()
            .map(|p| nodepool_core::model::json::JsonValue::Object(p.clone()).to_python_json(false))
    };
    assert_eq!(
        props(&spot).as_deref(),
        Some(r#"{"fleet": false, "spot": true}"#)
    );
    assert_eq!(
        props(&fleet).as_deref(),
        Some(r#"{"fleet": true, "spot": false}"#)
    );
    let item = aws_support::describe(&provider, &fleet.external_id).await;
    assert_eq!(item.tags()["nodepool_node_id"], spec.node_id);
    let t = item.text_at(&["instanceType"]).unwrap_or_default();
    assert!(t == "t3.nano" || t == "t3.micro", "fleet launched {t}");
    // The launch template is upstream's, shared with it by name.
    let mut p = Params::new();
    p.filter("launch-template-name", &["nodepool-launch-template-*"]);
    let templates = provider
        .client()
        .ec2("DescribeLaunchTemplates", &p)
        .await
        .expect("templates");
    let names: Vec<String> = templates
        .items("launchTemplates")
        .filter_map(|t| t.text_at(&["launchTemplateName"]))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");

    let listed = list_all_instances(&provider).await.expect("list");
    let ids: Vec<&str> = listed.iter().map(|i| i.external_id.as_str()).collect();
    for id in [&spot.external_id, &filtered.external_id, &fleet.external_id] {
        assert!(ids.contains(&id.as_str()), "{id} not listed: {ids:?}");
    }
}

#[tokio::test]
async fn quota_falls_back_to_max_resources_when_service_quotas_fails() {
    let Some(moto) = aws_support::start() else {
        return;
    };
    let (_, probe) = moto.provider(&aws_support::config("ami-x", "x", 10));
    let (image_id, image_name) = aws_support::stock_image(&probe).await;
    // moto answers 500 to ListServiceQuotas: only max-resources limit.
    let text = aws_support::config(&image_id, &image_name, 10).replace(
        "        max-servers: 10\n",
        "        max-servers: 10\n        max-resources:\n          L-1216C47A: 8\n",
    );
    let (_, provider) = moto.provider(&text);
    let quota = provider.quota().await.expect("quota");
    // 8 on-demand vCPUs of t3 types (2 vCPUs on 1 core) are 4 cores.
    assert_eq!(quota.cores, Some(4));
    let (_, unlimited) = moto.provider(&aws_support::config(&image_id, &image_name, 10));
    assert_eq!(unlimited.quota().await.expect("quota").cores, None);
}

#[tokio::test]
async fn leaked_volumes_are_deleted_after_the_grace_period() {
    let Some(moto) = aws_support::start() else {
        return;
    };
    let (_, probe) = moto.provider(&aws_support::config("ami-x", "x", 10));
    let (image_id, image_name) = aws_support::stock_image(&probe).await;
    let (_, provider) = moto.provider(&aws_support::config(&image_id, &image_name, 10));
    let provider = provider.with_volume_grace(Duration::from_millis(200));
    let create = |tags: BTreeMap<String, String>| {
        let mut p = Params::new();
        p.set("AvailabilityZone", "us-west-2a").set("Size", 1);
        p.set("TagSpecification.1.ResourceType", "volume");
        p.tags("TagSpecification.1.Tag", &tags);
        p
    };
    let ours = BTreeMap::from([
        ("nodepool_provider_name".to_string(), "ec2-test".to_string()),
        ("nodepool_node_id".to_string(), "0000000099".to_string()),
    ]);
    let theirs = BTreeMap::from([("nodepool_provider_name".to_string(), "other".to_string())]);
    let mut ids = Vec::new();
    for tags in [ours, theirs] {
        let answer = provider
            .client()
            .ec2("CreateVolume", &create(tags))
            .await
            .expect("CreateVolume");
        ids.push(answer.text_at(&["volumeId"]).expect("volume id"));
    }
    let exists = |id: String| {
        let provider = &provider;
        async move {
            let mut p = Params::new();
            p.filter("volume-id", &[&id]);
            let answer = provider
                .client()
                .ec2("DescribeVolumes", &p)
                .await
                .expect("DescribeVolumes");
            let found = answer.items("volumeSet").next().is_some();
            found
        }
    };
    // First pass: seen, still within the grace period.
    list_all_instances(&provider).await.expect("list");
    assert!(exists(ids[0].clone()).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    list_all_instances(&provider).await.expect("list");
    assert!(
        !exists(ids[0].clone()).await,
        "our leaked volume is deleted"
    );
    assert!(
        exists(ids[1].clone()).await,
        "another provider's volume stays"
    );
}

/// `import-method: ebs-direct` end to end: the file's blocks are in the
/// snapshot, the AMI and snapshot carry the upload's tags, a label booting
/// the diskimage launches from the AMI, and deleting the image removes the
/// AMI and its snapshot.
#[tokio::test]
async fn ebs_direct_upload_registers_an_ami_that_boots_in_moto() {
    use nodepool_core::provider::{ImageRef, ImageUploadSpec};
    use nodepool_drivers::aws::credentials::Service;

    let Some(moto) = aws_support::start() else {
        return;
    };
    let (_, probe) = moto.provider(&aws_support::config("ami-x", "x", 10));
    let (image_id, image_name) = aws_support::stock_image(&probe).await;
    let (_, provider) = moto.provider(&aws_support::config(&image_id, &image_name, 10));

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("suite.raw");
    // Two whole blocks and a partial third, each block a different byte.
    let mut data = vec![1u8; 512 * 1024];
    data.extend(vec![2u8; 512 * 1024]);
    data.extend(vec![3u8; 1000]);
    std::fs::write(&file, &data).expect("image file");
    let spec = ImageUploadSpec {
        diskimage: "suite".into(),
        build_id: "0000000007".into(),
        upload_id: "0000000001".into(),
        external_name: "suite-1700000000".into(),
        path: file,
        format: "raw".into(),
        metadata: BTreeMap::from([
            ("nodepool_build_id".to_string(), "0000000007".to_string()),
            ("nodepool_upload_id".to_string(), "0000000001".to_string()),
            ("built-by".to_string(), "nodepool-rs".to_string()),
        ]),
    };
    let ami = provider.upload_image(&spec).await.expect("upload");

    let mut p = Params::new();
    p.set("ImageId.1", &ami);
    let answer = provider
        .client()
        .ec2("DescribeImages", &p)
        .await
        .expect("DescribeImages");
    let image = answer.items("imagesSet").next().expect("the AMI");
    assert_eq!(
        image.text_at(&["name"]).as_deref(),
        Some("suite-1700000000")
    );
    let tags = image.tags();
    assert_eq!(tags["nodepool_build_id"], "0000000007");
    assert_eq!(tags["nodepool_provider_name"], "ec2-test");
    assert_eq!(tags["built-by"], "nodepool-rs");
    // moto's RegisterImage drops the block device mapping; find the
    // snapshot by the upload's tags, which StartSnapshot set.
    let mut p = Params::new();
    p.filter("tag:nodepool_upload_id", &["0000000001"])
        .filter("tag:nodepool_provider_name", &["ec2-test"]);
    let snaps = provider
        .client()
        .ec2("DescribeSnapshots", &p)
        .await
        .expect("DescribeSnapshots");
    let snapshot = snaps
        .items("snapshotSet")
        .next()
        .and_then(|s| s.text_at(&["snapshotId"]))
        .expect("the upload's snapshot");
    assert_eq!(
        snaps
            .items("snapshotSet")
            .next()
            .and_then(|s| s.text_at(&["volumeSize"]))
            .as_deref(),
        Some("1"),
        "1 GiB holds the 1 MiB file"
    );

    // The blocks moto holds are the file's, zero-padded to 512 KiB.
    for (index, byte) in [(0u8, 1u8), (1, 2), (2, 3)] {
        let (status, body) = provider
            .client()
            .send(
                Service::Ebs,
                "GetSnapshotBlock",
                reqwest::Method::GET,
                &format!("/snapshots/{snapshot}/blocks/{index}"),
                &[("blockToken".to_string(), "x".to_string())],
                &[],
                Vec::new(),
            )
            .await
            .expect("GetSnapshotBlock");
        assert_eq!(status, 200, "block {index}");
        assert_eq!(body.len(), 512 * 1024, "block {index} length");
        assert_eq!(body[0], byte, "block {index} content");
        if index == 2 {
            assert_eq!(body[999], 3);
            assert_eq!(body[1000], 0, "the last block is zero-padded");
        }
    }

    // A label booting the diskimage launches from the AMI.
    let mut launch = spec_for(&provider, "from-dib");
    launch.image = Some(ImageRef::Uploaded {
        diskimage: "suite".into(),
        external_id: ami.clone(),
    });
    let created = provider.create_instance(&launch).await.expect("create");
    let item = aws_support::describe(&provider, &created.external_id).await;
    assert_eq!(item.text_at(&["imageId"]).as_deref(), Some(ami.as_str()));
    provider
        .delete_instance(&created.external_id)
        .await
        .expect("delete instance");

    assert!(provider
        .list_images()
        .await
        .expect("list")
        .iter()
        .any(|i| i.external_id == ami));
    provider.delete_image(&ami).await.expect("delete image");
    assert!(provider
        .list_images()
        .await
        .expect("list")
        .iter()
        .all(|i| i.external_id != ami));
    let mut p = Params::new();
    p.filter("snapshot-id", &[&snapshot]);
    let snaps = provider
        .client()
        .ec2("DescribeSnapshots", &p)
        .await
        .expect("DescribeSnapshots");
    assert!(
        snaps.items("snapshotSet").next().is_none(),
        "the AMI's snapshot is deleted with it"
    );
}

/// A `dedicated-host` label allocates a tagged host in the pool's zone,
/// places the instance on it, and the host is released once it has held
/// no instance for the grace period.
#[tokio::test]
async fn dedicated_hosts_are_allocated_and_released_in_moto() {
    let Some(moto) = aws_support::start() else {
        return;
    };
    let (_, probe) = moto.provider(&aws_support::config("ami-x", "x", 10));
    let (image_id, image_name) = aws_support::stock_image(&probe).await;
    let (_, provider) = moto.provider(&aws_support::config(&image_id, &image_name, 10));
    let provider = provider.with_volume_grace(Duration::from_millis(200));

    let mut cfg = SuiteConfig::new("hosts", "dedicated");
    cfg.boot_timeout = Duration::from_secs(30);
    let spec = launch_spec(&provider, &cfg);
    let created = provider.create_instance(&spec).await.expect("create");
    let item = aws_support::describe(&provider, &created.external_id).await;
    let host = item
        .text_at(&["placement", "hostId"])
        .expect("placed on a host");
    // (moto keeps the host id but reports tenancy "default".)
    let describe_host = |host: String| {
        let provider = &provider;
        async move {
            let mut p = Params::new();
            p.set("HostId.1", &host);
            let answer = provider
                .client()
                .ec2("DescribeHosts", &p)
                .await
                .expect("DescribeHosts");
            let found = answer.items("hostSet").next().cloned();
            found.expect("the host")
        }
    };
    let h = describe_host(host.clone()).await;
    assert_eq!(
        h.text_at(&["availabilityZone"]).as_deref(),
        Some("us-west-2b")
    );
    assert_eq!(h.tags()["nodepool_node_id"], spec.node_id);

    // While it holds the instance it is not released, however long.
    list_all_instances(&provider).await.expect("list");
    tokio::time::sleep(Duration::from_millis(300)).await;
    list_all_instances(&provider).await.expect("list");
    let h = describe_host(host.clone()).await;
    assert_eq!(h.text_at(&["state"]).as_deref(), Some("available"));

    provider
        .delete_instance(&created.external_id)
        .await
        .expect("delete");
    // Once empty and past
    // the grace period, the leak pass releases it.
    list_all_instances(&provider).await.expect("list");
    tokio::time::sleep(Duration::from_millis(300)).await;
    list_all_instances(&provider).await.expect("list");
    let h = describe_host(host.clone()).await;
    assert_eq!(h.text_at(&["state"]).as_deref(), Some("released"), "{h:?}");
}

/// A stand-in for Service Quotas (moto answers 500): two pages of EC2
/// quotas. Returns its URL and the `x-amz-target`s it was called with.
async fn fake_service_quotas() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = calls.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the headers and the body (Content-Length).
            let (head, body) = loop {
                let n = stream.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break (String::new(), String::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let head = text[..end].to_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if text.len() >= end + 4 + len {
                        break (head, text[end + 4..end + 4 + len].to_string());
                    }
                }
            };
            let target = head
                .lines()
                .find_map(|l| l.strip_prefix("x-amz-target:"))
                .unwrap_or_default()
                .trim()
                .to_string();
            let signed = head.contains("authorization: aws4-hmac-sha256 credential=testing/");
            seen.lock()
                .expect("lock")
                .push(format!("{target} signed={signed}"));
            let page = if body.contains("\"NextToken\":\"p2\"") {
                json!({"Quotas": [{
                    "QuotaCode": "L-34B43A08",
                    "QuotaName": "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests",
                    "Value": 4.0
                }]})
            } else {
                json!({"Quotas": [{
                    "QuotaCode": "L-1216C47A",
                    "QuotaName": "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
                    "Value": 16.0
                }], "NextToken": "p2"})
            };
            let body = page.to_string();
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.1\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    });
    (url, calls)
}

/// With Service Quotas readable, each label's vCPU quota code (found from
/// the quota names, every page read) limits the provider's cores.
#[tokio::test]
async fn quota_reads_every_page_of_service_quotas() {
    let Some(moto) = aws_support::start() else {
        return;
    };
    let (_, probe) = moto.provider(&aws_support::config("ami-x", "x", 10));
    let (image_id, image_name) = aws_support::stock_image(&probe).await;
    let (url, calls) = fake_service_quotas().await;
    let (_, provider) = moto.provider_with(
        &aws_support::config(&image_id, &image_name, 10),
        vec![("AWS_ENDPOINT_URL_SERVICE_QUOTAS", url)],
    );
    let quota = provider.quota().await.expect("quota");
    // On demand: 16 vCPUs of 2-vCPU, 1-core types = 8 cores; the spot
    // label's 4 vCPUs = 2 cores; the smaller wins.
    assert_eq!(quota.cores, Some(2));
    let seen = calls.lock().expect("lock").clone();
    assert_eq!(
        seen,
        vec![
            "servicequotasv20190624.listservicequotas signed=true".to_string(),
            "servicequotasv20190624.listservicequotas signed=true".to_string(),
        ],
        "both pages, signed"
    );
    // Cached: no third call.
    provider.quota().await.expect("quota");
    assert_eq!(calls.lock().expect("lock").len(), 2);
}

/// `import-method: snapshot`: the image goes to S3 in parts with the
/// upload's tags; moto answers 500 to ImportSnapshot, so the upload fails
/// as a passing fault, and the object is deleted again.
#[tokio::test]
async fn snapshot_import_uploads_to_s3_and_cleans_up_when_the_import_fails() {
    use nodepool_core::provider::ImageUploadSpec;
    use nodepool_drivers::aws::credentials::Service;
    use nodepool_drivers::aws::s3;

    let Some(moto) = aws_support::start() else {
        return;
    };
    let (_, probe) = moto.provider(&aws_support::config("ami-x", "x", 10));
    let (image_id, image_name) = aws_support::stock_image(&probe).await;
    let (_, provider) = moto.provider(&aws_support::config(&image_id, &image_name, 10));
    let client = provider.client();
    let (status, body) = client
        .send(
            Service::S3,
            "CreateBucket",
            reqwest::Method::PUT,
            "/nodepool-images",
            &[],
            &[],
            b"<CreateBucketConfiguration><LocationConstraint>us-west-2</LocationConstraint>\
              </CreateBucketConfiguration>"
                .to_vec(),
        )
        .await
        .expect("CreateBucket");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // Three parts of 5 MiB, 5 MiB and 1 MiB, read back whole.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("image.raw");
    let data: Vec<u8> = (0..11 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).expect("write");
    let tags = BTreeMap::from([
        ("nodepool_build_id".to_string(), "0000000003".to_string()),
        ("team".to_string(), "ci infra/v1".to_string()),
    ]);
    s3::upload_file_in_parts(
        client,
        "nodepool-images",
        "probe.raw",
        &file,
        &tags,
        5 * 1024 * 1024,
    )
    .await
    .expect("multipart upload");
    let back = s3::get_object(client, "nodepool-images", "probe.raw")
        .await
        .expect("GetObject");
    assert!(
        back == data,
        "the object is the file ({} bytes back)",
        back.len()
    );
    let (status, tagging) = client
        .send(
            Service::S3,
            "GetObjectTagging",
            reqwest::Method::GET,
            "/nodepool-images/probe.raw",
            &[("tagging".to_string(), String::new())],
            &[],
            Vec::new(),
        )
        .await
        .expect("GetObjectTagging");
    let tagging = String::from_utf8_lossy(&tagging);
    assert_eq!(status, 200, "{tagging}");
    assert!(tagging.contains("<Value>ci infra/v1</Value>"), "{tagging}");
    s3::delete_object(client, "nodepool-images", "probe.raw")
        .await
        .expect("DeleteObject");

    let spec = ImageUploadSpec {
        diskimage: "snap".into(),
        build_id: "0000000003".into(),
        upload_id: "0000000001".into(),
        external_name: "snap-1700000000".into(),
        path: file,
        format: "raw".into(),
        metadata: tags.clone(),
    };
    let err = provider
        .upload_image(&spec)
        .await
        .expect_err("moto cannot ImportSnapshot");
    assert!(err.to_string().contains("ImportSnapshot"), "{err}");
    assert_eq!(err.kind(), nodepool_core::ErrorKind::Transient, "{err}");
    let (status, listing) = client
        .send(
            Service::S3,
            "ListObjectsV2",
            reqwest::Method::GET,
            "/nodepool-images",
            &[("list-type".to_string(), "2".to_string())],
            &[],
            Vec::new(),
        )
        .await
        .expect("ListObjectsV2");
    let listing = String::from_utf8_lossy(&listing);
    assert_eq!(status, 200, "{listing}");
    assert!(
        !listing.contains("snap-1700000000.raw"),
        "the image object is deleted after the failed import: {listing}"
    );
}

/// What a crashed upload leaves (a snapshot without an AMI, an image
/// object) is listed with its upload tags, so the builder's leak pass can
/// delete it when its upload has no record; deleting works by id.
#[tokio::test]
async fn orphan_snapshots_and_objects_are_listed_and_deleted() {
    use nodepool_drivers::aws::credentials::Service;
    use nodepool_drivers::aws::s3;

    let Some(moto) = aws_support::start() else {
        return;
    };
    let (_, probe) = moto.provider(&aws_support::config("ami-x", "x", 10));
    let (image_id, image_name) = aws_support::stock_image(&probe).await;
    let (_, provider) = moto.provider(&aws_support::config(&image_id, &image_name, 10));
    let client = provider.client();
    let tags = BTreeMap::from([
        ("nodepool_provider_name".to_string(), "ec2-test".to_string()),
        ("nodepool_build_id".to_string(), "0000000009".to_string()),
        ("nodepool_upload_id".to_string(), "0000000002".to_string()),
    ]);

    // A snapshot started by an upload that never registered its AMI.
    let (status, body) = client
        .send(
            Service::Ebs,
            "StartSnapshot",
            reqwest::Method::POST,
            "/snapshots",
            &[],
            &[("content-type".to_string(), "application/json".to_string())],
            json!({"VolumeSize": 1, "Tags": tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>()})
                .to_string()
                .into_bytes(),
        )
        .await
        .expect("StartSnapshot");
    assert!(status < 300, "{status}: {}", String::from_utf8_lossy(&body));
    let snapshot = serde_json::from_slice::<serde_json::Value>(&body).expect("json")["SnapshotId"]
        .as_str()
        .expect("id")
        .to_string();

    // An image object left in the bucket.
    let (status, _) = client
        .send(
            Service::S3,
            "CreateBucket",
            reqwest::Method::PUT,
            "/nodepool-images",
            &[],
            &[],
            b"<CreateBucketConfiguration><LocationConstraint>us-west-2</LocationConstraint>\
              </CreateBucketConfiguration>"
                .to_vec(),
        )
        .await
        .expect("CreateBucket");
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("left.raw");
    std::fs::write(&file, b"image bytes").expect("write");
    s3::upload_file(client, "nodepool-images", "left.raw", &file, &tags)
        .await
        .expect("upload");
    let other = BTreeMap::from([("nodepool_provider_name".to_string(), "other".to_string())]);
    s3::upload_file(client, "nodepool-images", "theirs.raw", &file, &other)
        .await
        .expect("upload");

    let listed = provider.list_images().await.expect("list");
    let ids: Vec<&str> = listed.iter().map(|i| i.external_id.as_str()).collect();
    assert!(ids.contains(&snapshot.as_str()), "{ids:?}");
    assert!(ids.contains(&"s3://nodepool-images/left.raw"), "{ids:?}");
    assert!(!ids.iter().any(|i| i.contains("theirs")), "{ids:?}");
    for image in &listed {
        assert_eq!(image.metadata["nodepool_upload_id"], "0000000002");
    }

    provider
        .delete_image(&snapshot)
        .await
        .expect("delete snapshot");
    provider
        .delete_image("s3://nodepool-images/left.raw")
        .await
        .expect("delete object");
    let ids: Vec<String> = provider
        .list_images()
        .await
        .expect("list")
        .into_iter()
        .map(|i| i.external_id)
        .collect();
    assert!(ids.is_empty(), "{ids:?}");
    assert_eq!(
        s3::list_keys(client, "nodepool-images")
            .await
            .expect("keys"),
        vec!["theirs.raw".to_string()]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_import_uploads_to_s3_and_cleans_up_when_the_import_fails() {
    use nodepool_core::provider::ImageUploadSpec;
    use nodepool_drivers::aws::credentials::Service;

    let Some(moto) = aws_support::start() else {
        return;
    };
    let (_, probe) = moto.provider(&aws_support::config("ami-x", "x", 10));
    let (image_id, image_name) = aws_support::stock_image(&probe).await;
    let (_, provider) = moto.provider(&aws_support::config(&image_id, &image_name, 10));
    let client = provider.client();
    let (status, body) = client
        .send(
            Service::S3,
            "CreateBucket",
            reqwest::Method::PUT,
            "/nodepool-images",
            &[],
            &[],
            b"<CreateBucketConfiguration><LocationConstraint>us-west-2</LocationConstraint>\
              </CreateBucketConfiguration>"
                .to_vec(),
        )
        .await
        .expect("CreateBucket");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("image.vhd");
    std::fs::write(&file, vec![7u8; 64 * 1024]).expect("write");
    let spec = ImageUploadSpec {
        diskimage: "imported".into(),
        build_id: "0000000004".into(),
        upload_id: "0000000001".into(),
        external_name: "imported-1700000000".into(),
        path: file,
        format: "vhd".into(),
        metadata: BTreeMap::from([("nodepool_build_id".to_string(), "0000000004".to_string())]),
    };
    // moto 5.2.5 answers ImportImage with 500: the S3 part runs, the
    // import is refused, and the object does not stay behind.
    let err = provider
        .upload_image(&spec)
        .await
        .expect_err("moto cannot ImportImage");
    assert!(err.to_string().contains("ImportImage"), "{err}");
    let (status, listing) = client
        .send(
            Service::S3,
            "ListObjectsV2",
            reqwest::Method::GET,
            "/nodepool-images",
            &[("list-type".to_string(), "2".to_string())],
            &[],
            Vec::new(),
        )
        .await
        .expect("ListObjectsV2");
    let listing = String::from_utf8_lossy(&listing);
    assert_eq!(status, 200, "{listing}");
    assert!(
        !listing.contains("imported-1700000000.vhd"),
        "the image object is deleted after the failed import: {listing}"
    );
}
