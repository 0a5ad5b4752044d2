//! Diskimage uploads as upstream does them. `import-method: ebs-direct`:
//! the file is written into a new EBS snapshot with the EBS direct APIs
//! (StartSnapshot, PutSnapshotBlock per 512 KiB block, CompleteSnapshot).
//! `import-method: snapshot`: the file goes to S3 and ImportSnapshot makes
//! the snapshot. Either way the snapshot is registered as an AMI
//! (RegisterImage), both tagged with the upload's metadata. Deleting an image deregisters the AMI and deletes its
//! snapshots.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use futures::{StreamExt, TryStreamExt};
use nodepool_core::provider::{CloudImage, ImageUploadSpec};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;

use super::client::{AwsClient, Params, Xml};
use super::config::AwsDiskImage;
use super::credentials::Service;
use super::error::AwsError;

type AwsResult<T> = std::result::Result<T, AwsError>;

/// The EBS direct API's block size (upstream's `segment_size`).
pub const BLOCK_SIZE: usize = 512 * 1024;
/// Blocks written at once.
const PARALLEL_BLOCKS: usize = 8;
const GIB: u64 = 1024 * 1024 * 1024;

fn json_error(action: &str, status: u16, body: &[u8]) -> AwsError {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    AwsError::Api {
        action: action.to_string(),
        status,
        code: v["__type"]
            .as_str()
            .or(v["code"].as_str())
            .unwrap_or("HTTP error")
            .to_string(),
        message: v["message"]
            .as_str()
            .or(v["Message"].as_str())
            .unwrap_or_default()
            .to_string(),
    }
}

async fn ebs_json(
    client: &AwsClient,
    action: &str,
    method: Method,
    path: &str,
    headers: &[(String, String)],
    body: Option<Value>,
) -> AwsResult<Value> {
    let mut headers = headers.to_vec();
    let bytes = match body {
        Some(b) => {
            headers.push(("content-type".into(), "application/json".into()));
            b.to_string().into_bytes()
        }
        None => Vec::new(),
    };
    let (status, answer) = client
        .send(Service::Ebs, action, method, path, &[], &headers, bytes)
        .await?;
    if status >= 300 {
        return Err(json_error(action, status, &answer));
    }
    Ok(serde_json::from_slice(&answer).unwrap_or(Value::Null))
}

fn tag_list(tags: &BTreeMap<String, String>) -> Value {
    Value::Array(
        tags.iter()
            .map(|(k, v)| json!({ "Key": k, "Value": v }))
            .collect(),
    )
}

/// Write `spec.path` into a new snapshot; its id and size in GiB.
async fn upload_snapshot(
    client: &AwsClient,
    spec: &ImageUploadSpec,
    timeout: Option<Duration>,
) -> AwsResult<(String, u64)> {
    let io = |e: std::io::Error| AwsError::Io(format!("{}: {e}", spec.path.display()));
    let size = tokio::fs::metadata(&spec.path).await.map_err(io)?.len();
    let size_gib = size.div_ceil(GIB).max(1);
    let started = Instant::now();
    let token = format!("{}-{}", spec.upload_id, spec.build_id);
    let answer = ebs_json(
        client,
        "StartSnapshot",
        Method::POST,
        "/snapshots",
        &[],
        Some(json!({
            "VolumeSize": size_gib,
            "ClientToken": token,
            "Tags": tag_list(&spec.metadata),
        })),
    )
    .await?;
    let snapshot = answer["SnapshotId"]
        .as_str()
        .ok_or_else(|| AwsError::BadResponse {
            action: "StartSnapshot".into(),
            message: "no SnapshotId".into(),
        })?
        .to_string();
    let result = write_blocks(client, spec, &snapshot, size, timeout, started).await;
    match result {
        Ok(count) => {
            complete_snapshot(client, &snapshot, count, timeout, started).await?;
            Ok((snapshot, size_gib))
        }
        Err(e) => {
            let mut p = Params::new();
            p.set("SnapshotId", &snapshot);
            let _ = client.ec2("DeleteSnapshot", &p).await;
            Err(e)
        }
    }
}

async fn write_blocks(
    client: &AwsClient,
    spec: &ImageUploadSpec,
    snapshot: &str,
    size: u64,
    timeout: Option<Duration>,
    started: Instant,
) -> AwsResult<u64> {
    let io = |e: std::io::Error| AwsError::Io(format!("{}: {e}", spec.path.display()));
    let mut file = tokio::fs::File::open(&spec.path).await.map_err(io)?;
    let blocks = size.div_ceil(BLOCK_SIZE as u64);
    let mut count = 0u64;
    let mut index = 0u64;
    while index < blocks {
        // Read a batch, then write it in parallel.
        let mut batch = Vec::new();
        while batch.len() < PARALLEL_BLOCKS && index < blocks {
            let mut data = vec![0u8; BLOCK_SIZE];
            let mut filled = 0;
            while filled < BLOCK_SIZE {
                let n = file.read(&mut data[filled..]).await.map_err(io)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            batch.push((index, data));
            index += 1;
        }
        futures::stream::iter(batch)
            .map(|(i, data)| put_block(client, snapshot, i, data))
            .buffer_unordered(PARALLEL_BLOCKS)
            .try_collect::<Vec<()>>()
            .await?;
        count = index;
        if let Some(limit) = timeout {
            if started.elapsed() > limit {
                return Err(AwsError::Failed(format!(
                    "image upload took longer than image-import-timeout ({}s)",
                    limit.as_secs()
                )));
            }
        }
    }
    Ok(count)
}

async fn put_block(client: &AwsClient, snapshot: &str, index: u64, data: Vec<u8>) -> AwsResult<()> {
    let digest = ring::digest::digest(&ring::digest::SHA256, &data);
    let checksum = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    let headers = vec![
        ("x-amz-Data-Length".to_string(), data.len().to_string()),
        ("x-amz-Checksum".to_string(), checksum.clone()),
        ("x-amz-Checksum-Algorithm".to_string(), "SHA256".to_string()),
        (
            "content-type".to_string(),
            "application/octet-stream".to_string(),
        ),
    ];
    let path = format!("/snapshots/{snapshot}/blocks/{index}");
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (status, answer) = client
            .send(
                Service::Ebs,
                "PutSnapshotBlock",
                Method::PUT,
                &path,
                &[],
                &headers,
                data.clone(),
            )
            .await?;
        if status < 300 {
            return Ok(());
        }
        let error = json_error("PutSnapshotBlock", status, &answer);
        // Throttling, server errors and validation errors are retried, as
        // upstream does.
        let retry = status >= 500 || status == 429 || status == 400;
        if !retry || attempt >= 5 {
            return Err(error);
        }
        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
    }
}

async fn complete_snapshot(
    client: &AwsClient,
    snapshot: &str,
    count: u64,
    timeout: Option<Duration>,
    started: Instant,
) -> AwsResult<()> {
    loop {
        let answer = ebs_json(
            client,
            "CompleteSnapshot",
            Method::POST,
            &format!("/snapshots/completion/{snapshot}"),
            &[("x-amz-ChangedBlocksCount".to_string(), count.to_string())],
            None,
        )
        .await?;
        match answer["Status"].as_str() {
            Some("completed") => return Ok(()),
            Some("error") => {
                return Err(AwsError::Failed(format!(
                    "snapshot {snapshot} is in error state"
                )))
            }
            _ => {}
        }
        if timeout.is_some_and(|t| started.elapsed() > t) {
            return Err(AwsError::Failed(format!(
                "snapshot {snapshot} did not complete within image-import-timeout"
            )));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Upload `spec` with `ebs-direct` and register it; the AMI id.
pub async fn upload_ebs_direct(
    client: &AwsClient,
    image: &AwsDiskImage,
    spec: &ImageUploadSpec,
    timeout: Option<Duration>,
) -> AwsResult<String> {
    let (snapshot, size_gib) = upload_snapshot(client, spec, timeout).await?;
    tracing::info!(snapshot = %snapshot, image = %spec.external_name, "snapshot written");
    register(client, image, spec, &snapshot, size_gib).await
}

/// Register `snapshot` as an AMI as upstream's `_registerImage` does, and
/// tag it; the snapshot is deleted when the registration fails.
async fn register(
    client: &AwsClient,
    image: &AwsDiskImage,
    spec: &ImageUploadSpec,
    snapshot: &str,
    size_gib: u64,
) -> AwsResult<String> {
    let mut p = Params::new();
    let bdm = "BlockDeviceMapping.1";
    p.set("Architecture", &image.architecture)
        .set(format!("{bdm}.DeviceName"), "/dev/sda1")
        .set(format!("{bdm}.Ebs.DeleteOnTermination"), true)
        .set(format!("{bdm}.Ebs.SnapshotId"), snapshot)
        .set(
            format!("{bdm}.Ebs.VolumeSize"),
            image
                .volume_size
                .map_or(size_gib, |v| u64::try_from(v).unwrap_or(size_gib)),
        )
        .set(format!("{bdm}.Ebs.VolumeType"), &image.volume_type);
    if let Some(iops) = image.iops {
        p.set(format!("{bdm}.Ebs.Iops"), iops);
    }
    if let Some(t) = image.throughput {
        p.set(format!("{bdm}.Ebs.Throughput"), t);
    }
    p.set("RootDeviceName", "/dev/sda1")
        .set("VirtualizationType", "hvm")
        .set("EnaSupport", image.ena_support)
        .set("Name", &spec.external_name)
        .set("TagSpecification.1.ResourceType", "image");
    p.tags("TagSpecification.1.Tag", &spec.metadata);
    if image.imds_support.as_deref() == Some("v2.0") {
        p.set("ImdsSupport", "v2.0");
    }
    match client.ec2("RegisterImage", &p).await {
        Ok(answer) => {
            let id = answer
                .text_at(&["imageId"])
                .ok_or_else(|| AwsError::BadResponse {
                    action: "RegisterImage".into(),
                    message: "no imageId".into(),
                })?;
            // Tag again: an EC2 that ignores RegisterImage's tag
            // specification (moto does) must still show ours, or the
            // builder could not tell the image is its own.
            let mut t = Params::new();
            t.set("ResourceId.1", &id);
            t.tags("Tag", &spec.metadata);
            client.ec2("CreateTags", &t).await?;
            Ok(id)
        }
        Err(e) => {
            let mut d = Params::new();
            d.set("SnapshotId", snapshot);
            let _ = client.ec2("DeleteSnapshot", &d).await;
            Err(e)
        }
    }
}

/// How often an import task is looked at (upstream's 30 s).
const IMPORT_POLL: Duration = Duration::from_secs(30);

/// Upload `spec` with `import-method: snapshot`: the file as an S3 object
/// in `bucket` (named `<image name>.<format>`, tagged with the upload's
/// metadata), ImportSnapshot from it, wait for the task, delete the
/// object, tag the snapshot, register the AMI.
pub async fn upload_snapshot_import(
    client: &AwsClient,
    image: &AwsDiskImage,
    spec: &ImageUploadSpec,
    bucket: &str,
    timeout: Option<Duration>,
) -> AwsResult<String> {
    let key = format!("{}.{}", spec.external_name, spec.format);
    super::s3::upload_file(client, bucket, &key, &spec.path, &spec.metadata).await?;
    tracing::info!(bucket = %bucket, key = %key, "image object uploaded");
    let imported = import_snapshot(client, spec, bucket, &key, timeout).await;
    if let Err(e) = super::s3::delete_object(client, bucket, &key).await {
        tracing::warn!(bucket = %bucket, key = %key, error = %e, "cannot delete image object");
    }
    let (snapshot, size_gib) = imported?;
    let size = image
        .volume_size
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(size_gib);
    register(client, image, spec, &snapshot, size).await
}

async fn import_snapshot(
    client: &AwsClient,
    spec: &ImageUploadSpec,
    bucket: &str,
    key: &str,
    timeout: Option<Duration>,
) -> AwsResult<(String, u64)> {
    let deadline = Deadline::start(timeout);
    let mut p = Params::new();
    p.set("DiskContainer.Format", &spec.format)
        .set("DiskContainer.UserBucket.S3Bucket", bucket)
        .set("DiskContainer.UserBucket.S3Key", key)
        .set("TagSpecification.1.ResourceType", "import-snapshot-task");
    p.tags("TagSpecification.1.Tag", &spec.metadata);
    let task = start_import(client, "ImportSnapshot", &p, &deadline).await?;
    let item = wait_import(
        client,
        "DescribeImportSnapshotTasks",
        "importSnapshotTaskSet",
        &task,
        &deadline,
        |item| item.child("snapshotTaskDetail").cloned(),
    )
    .await?;
    let snapshot = item
        .text_at(&["snapshotId"])
        .ok_or_else(|| AwsError::BadResponse {
            action: "DescribeImportSnapshotTasks".into(),
            message: "no snapshotId".into(),
        })?;
    let mut t = Params::new();
    t.set("ResourceId.1", &snapshot);
    t.tags("Tag", &spec.metadata);
    client.ec2("CreateTags", &t).await?;
    let mut d = Params::new();
    d.set("SnapshotId.1", &snapshot);
    let size = client
        .ec2("DescribeSnapshots", &d)
        .await?
        .items("snapshotSet")
        .next()
        .and_then(|s| s.text_at(&["volumeSize"]))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    Ok((snapshot, size))
}

/// `image-import-timeout`, from the start of an import.
struct Deadline {
    started: Instant,
    timeout: Option<Duration>,
}

impl Deadline {
    fn start(timeout: Option<Duration>) -> Self {
        Self {
            started: Instant::now(),
            timeout,
        }
    }

    fn passed(&self) -> bool {
        self.timeout.is_some_and(|t| self.started.elapsed() > t)
    }
}

/// Start an import task with `action` (ImportSnapshot, ImportImage): its
/// id. While EC2 answers `ResourceCountLimitExceeded` (too many imports at
/// once) it waits and asks again, as upstream does, until the deadline.
async fn start_import(
    client: &AwsClient,
    action: &str,
    params: &Params,
    deadline: &Deadline,
) -> AwsResult<String> {
    loop {
        match client.ec2(action, params).await {
            Ok(answer) => {
                return answer
                    .text_at(&["importTaskId"])
                    .ok_or_else(|| AwsError::BadResponse {
                        action: action.into(),
                        message: "no importTaskId".into(),
                    })
            }
            Err(AwsError::Api { code, .. })
                if code == "ResourceCountLimitExceeded" && !deadline.passed() =>
            {
                tokio::time::sleep(IMPORT_POLL).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Look at import task `task` every [`IMPORT_POLL`] with `action` until it
/// completes: then the part of its item (in `set`) that `detail` picks,
/// which carries `status` and the results. A deleted task, or one still
/// running at the deadline, is an error.
async fn wait_import(
    client: &AwsClient,
    action: &str,
    set: &str,
    task: &str,
    deadline: &Deadline,
    detail: impl Fn(&Xml) -> Option<Xml>,
) -> AwsResult<Xml> {
    loop {
        tokio::time::sleep(IMPORT_POLL).await;
        let mut q = Params::new();
        q.set("ImportTaskId.1", task);
        let answer = client.ec2(action, &q).await?;
        let detail = answer.items(set).next().and_then(&detail);
        let text = |path: &[&str]| detail.as_ref().and_then(|d| d.text_at(path));
        let status = text(&["status"]).unwrap_or_default().to_lowercase();
        match status.as_str() {
            "completed" => {
                return detail.ok_or_else(|| AwsError::BadResponse {
                    action: action.into(),
                    message: "no task detail".into(),
                })
            }
            "deleted" | "deleting" => {
                let message = text(&["statusMessage"]).unwrap_or_default();
                return Err(AwsError::Failed(format!(
                    "import task {task} ended {status}: {message}"
                )));
            }
            _ if deadline.passed() => {
                return Err(AwsError::Failed(format!(
                    "import task {task} did not complete within image-import-timeout"
                )))
            }
            _ => {}
        }
    }
}

/// Upload `spec` with `import-method: image` (upstream's
/// `_uploadImageImage`): the file as an S3 object in `bucket`, ImportImage
/// from it (with the diskimage's `architecture`), wait for the task, delete
/// the object, then tag the AMI and its snapshot with the upload's
/// metadata. Returns the AMI id.
pub async fn upload_image_import(
    client: &AwsClient,
    image: &AwsDiskImage,
    spec: &ImageUploadSpec,
    bucket: &str,
    timeout: Option<Duration>,
) -> AwsResult<String> {
    let key = format!("{}.{}", spec.external_name, spec.format);
    super::s3::upload_file(client, bucket, &key, &spec.path, &spec.metadata).await?;
    tracing::info!(bucket = %bucket, key = %key, "image object uploaded");
    let imported = import_image(client, image, spec, bucket, &key, timeout).await;
    if let Err(e) = super::s3::delete_object(client, bucket, &key).await {
        tracing::warn!(bucket = %bucket, key = %key, error = %e, "cannot delete image object");
    }
    let (ami, snapshot) = imported?;
    // As upstream: a tag that cannot be set is logged, not fatal.
    for resource in std::iter::once(&ami).chain(snapshot.as_ref()) {
        let mut t = Params::new();
        t.set("ResourceId.1", resource);
        t.tags("Tag", &spec.metadata);
        if let Err(e) = client.ec2("CreateTags", &t).await {
            tracing::warn!(resource = %resource, error = %e, "cannot tag the imported image");
        }
    }
    Ok(ami)
}

/// ImportImage and wait for its task: the AMI id and its first snapshot.
async fn import_image(
    client: &AwsClient,
    image: &AwsDiskImage,
    spec: &ImageUploadSpec,
    bucket: &str,
    key: &str,
    timeout: Option<Duration>,
) -> AwsResult<(String, Option<String>)> {
    let deadline = Deadline::start(timeout);
    let mut p = Params::new();
    p.set("Architecture", &image.architecture)
        .set("DiskContainer.1.Format", &spec.format)
        .set("DiskContainer.1.UserBucket.S3Bucket", bucket)
        .set("DiskContainer.1.UserBucket.S3Key", key)
        .set("TagSpecification.1.ResourceType", "import-image-task");
    p.tags("TagSpecification.1.Tag", &spec.metadata);
    let task = start_import(client, "ImportImage", &p, &deadline).await?;
    let item = wait_import(
        client,
        "DescribeImportImageTasks",
        "importImageTaskSet",
        &task,
        &deadline,
        |item| Some(item.clone()),
    )
    .await?;
    let ami = item
        .text_at(&["imageId"])
        .ok_or_else(|| AwsError::BadResponse {
            action: "DescribeImportImageTasks".into(),
            message: "no imageId".into(),
        })?;
    let snapshot = item
        .items("snapshotDetailSet")
        .next()
        .and_then(|s| s.text_at(&["snapshotId"]));
    Ok((ami, snapshot))
}

/// The external id [`list_images`] gives an S3 object: `s3://bucket/key`.
pub fn object_external_id(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

/// Delete what [`list_images`] listed: an AMI (`ami-...`, with its
/// snapshots), a snapshot left without an AMI (`snap-...`) or an image
/// object (`s3://bucket/key`). A missing one is fine.
pub async fn delete_image(client: &AwsClient, external_id: &str) -> AwsResult<()> {
    if let Some(rest) = external_id.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        return super::s3::delete_object(client, bucket, key).await;
    }
    if external_id.starts_with("snap-") {
        let mut s = Params::new();
        s.set("SnapshotId", external_id);
        return match client.ec2("DeleteSnapshot", &s).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == nodepool_core::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        };
    }
    delete_ami(client, external_id).await
}

/// Deregister an AMI and delete its snapshots; a missing AMI is fine.
async fn delete_ami(client: &AwsClient, image_id: &str) -> AwsResult<()> {
    let mut p = Params::new();
    p.set("ImageId.1", image_id);
    let answer = match client.ec2("DescribeImages", &p).await {
        Ok(a) => a,
        Err(e) if e.kind() == nodepool_core::ErrorKind::NotFound => return Ok(()),
        Err(AwsError::Api { code, .. }) if code == "InvalidAMIID.Malformed" => return Ok(()),
        Err(e) => return Err(e),
    };
    let Some(image) = answer.items("imagesSet").next() else {
        return Ok(());
    };
    let mut snapshots: Vec<String> = image
        .items("blockDeviceMapping")
        .filter_map(|b| b.text_at(&["ebs", "snapshotId"]))
        .collect();
    // The snapshot our upload wrote carries the same upload tags; find it
    // that way too (an EC2 that drops the AMI's block devices, as moto
    // does, would otherwise leak it).
    let tags = image.tags();
    let keys = [
        nodepool_core::provider::META_PROVIDER,
        "nodepool_build_id",
        "nodepool_upload_id",
    ];
    if keys.iter().all(|k| tags.contains_key(*k)) {
        let mut q = Params::new();
        q.set("Owner.1", "self");
        for key in keys {
            q.filter(&format!("tag:{key}"), &[&tags[key]]);
        }
        let found = client.ec2("DescribeSnapshots", &q).await?;
        for snap in found.items("snapshotSet") {
            if let Some(id) = snap.text_at(&["snapshotId"]) {
                if !snapshots.contains(&id) {
                    snapshots.push(id);
                }
            }
        }
    }
    let mut d = Params::new();
    d.set("ImageId", image_id);
    match client.ec2("DeregisterImage", &d).await {
        Ok(_) => {}
        Err(e) if e.kind() == nodepool_core::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    for snapshot in snapshots {
        let mut s = Params::new();
        s.set("SnapshotId", &snapshot);
        match client.ec2("DeleteSnapshot", &s).await {
            Ok(_) => {}
            Err(e) if e.kind() == nodepool_core::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What the builder made for provider `provider`, every page: its AMIs,
/// and (so the builder's leak pass can delete those whose upload has no
/// record) snapshots with upload tags that no listed AMI uses and image
/// objects in `bucket` tagged with the provider's name.
pub async fn list_images(
    client: &AwsClient,
    provider: &str,
    bucket: Option<&str>,
) -> AwsResult<Vec<CloudImage>> {
    let amis = list_amis(client, provider).await?;
    let mut out = Vec::new();
    let used: std::collections::BTreeSet<String> =
        amis.iter().flat_map(|(_, s)| s.iter().cloned()).collect();
    for (image, _) in amis {
        out.push(image);
    }
    out.extend(
        list_snapshots(client, provider)
            .await?
            .into_iter()
            .filter(|s| !used.contains(&s.external_id)),
    );
    if let Some(bucket) = bucket {
        // The AMIs matter most: a bucket that cannot be listed (missing,
        // no permission) leaves only the objects out.
        match list_objects(client, provider, bucket).await {
            Ok(objects) => out.extend(objects),
            Err(e) => tracing::warn!(bucket = %bucket, error = %e,
                "cannot list the image bucket for leaked objects"),
        }
    }
    Ok(out)
}

/// Our snapshots that carry upload tags.
async fn list_snapshots(client: &AwsClient, provider: &str) -> AwsResult<Vec<CloudImage>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut p = Params::new();
        p.set("Owner.1", "self");
        p.filter(
            &format!("tag:{}", nodepool_core::provider::META_PROVIDER),
            &[provider],
        );
        p.set("MaxResults", 1000);
        if let Some(t) = &token {
            p.set("NextToken", t);
        }
        let answer = client.ec2("DescribeSnapshots", &p).await?;
        for snap in answer.items("snapshotSet") {
            let tags = snap.tags();
            if !tags.contains_key("nodepool_upload_id") {
                continue;
            }
            out.push(CloudImage {
                external_id: snap.text_at(&["snapshotId"]).unwrap_or_default(),
                name: tags.get("Name").cloned().unwrap_or_default(),
                metadata: tags,
            });
        }
        token = answer.text_at(&["nextToken"]);
        if token.is_none() {
            return Ok(out);
        }
    }
}

/// The objects of `bucket` tagged with provider `provider`.
async fn list_objects(
    client: &AwsClient,
    provider: &str,
    bucket: &str,
) -> AwsResult<Vec<CloudImage>> {
    let mut out = Vec::new();
    for key in super::s3::list_keys(client, bucket).await? {
        let tags = super::s3::object_tags(client, bucket, &key).await?;
        if tags
            .get(nodepool_core::provider::META_PROVIDER)
            .map(String::as_str)
            == Some(provider)
        {
            out.push(CloudImage {
                external_id: object_external_id(bucket, &key),
                name: key,
                metadata: tags,
            });
        }
    }
    Ok(out)
}

/// Our AMIs with the snapshots they use.
async fn list_amis(
    client: &AwsClient,
    provider: &str,
) -> AwsResult<Vec<(CloudImage, Vec<String>)>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut p = Params::new();
        p.set("Owner.1", "self");
        p.filter(
            &format!("tag:{}", nodepool_core::provider::META_PROVIDER),
            &[provider],
        );
        p.set("MaxResults", 1000);
        if let Some(t) = &token {
            p.set("NextToken", t);
        }
        let answer = client.ec2("DescribeImages", &p).await?;
        for image in answer.items("imagesSet") {
            if image.text_at(&["imageState"]).as_deref() == Some("deregistered") {
                continue;
            }
            let snapshots = image
                .items("blockDeviceMapping")
                .filter_map(|b| b.text_at(&["ebs", "snapshotId"]))
                .collect();
            out.push((
                CloudImage {
                    external_id: image.text_at(&["imageId"]).unwrap_or_default(),
                    name: image.text_at(&["name"]).unwrap_or_default(),
                    metadata: image.tags(),
                },
                snapshots,
            ));
        }
        token = answer.text_at(&["nextToken"]);
        if token.is_none() {
            return Ok(out);
        }
    }
}
