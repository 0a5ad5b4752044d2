//! The S3 calls of image imports: a file uploaded as one object in parts
//! (multipart upload, path-style addressing), tagged, and deleted again.

use reqwest::Method;

use super::client::{api_error, AwsClient, Xml};
use super::credentials::Service;
use super::error::AwsError;
use super::sigv4::uri_encode;

type AwsResult<T> = std::result::Result<T, AwsError>;

/// The size of each uploaded part (S3 takes 5 MiB to 5 GiB, up to 10,000
/// parts: 64 MiB parts hold images up to 625 GiB).
pub const PART_SIZE: usize = 64 * 1024 * 1024;

fn path(bucket: &str, key: &str) -> String {
    format!("/{bucket}/{key}")
}

async fn call(
    client: &AwsClient,
    action: &str,
    method: Method,
    path: &str,
    query: &[(String, String)],
    headers: &[(String, String)],
    body: Vec<u8>,
) -> AwsResult<(reqwest::header::HeaderMap, Vec<u8>)> {
    let (status, headers, answer) = client
        .send_full(Service::S3, action, method, path, query, headers, body)
        .await?;
    if status >= 300 {
        let xml = Xml::parse(&String::from_utf8_lossy(&answer)).ok();
        return Err(api_error(action, status, xml.as_ref()));
    }
    Ok((headers, answer))
}

/// Upload `file` as `bucket/key` with `tags` (S3 object tags) in
/// [`PART_SIZE`] parts.
pub async fn upload_file(
    client: &AwsClient,
    bucket: &str,
    key: &str,
    file: &std::path::Path,
    tags: &std::collections::BTreeMap<String, String>,
) -> AwsResult<()> {
    upload_file_in_parts(client, bucket, key, file, tags, PART_SIZE).await
}

/// [`upload_file`] with parts of `part_size` bytes (at least 5 MiB but
/// for the last).
pub async fn upload_file_in_parts(
    client: &AwsClient,
    bucket: &str,
    key: &str,
    file: &std::path::Path,
    tags: &std::collections::BTreeMap<String, String>,
    part_size: usize,
) -> AwsResult<()> {
    use tokio::io::AsyncReadExt;
    let io = |e: std::io::Error| AwsError::Io(format!("{}: {e}", file.display()));
    let object = path(bucket, key);
    let tagging = tags
        .iter()
        .map(|(k, v)| format!("{}={}", uri_encode(k, false), uri_encode(v, false)))
        .collect::<Vec<_>>()
        .join("&");
    let (_, answer) = call(
        client,
        "CreateMultipartUpload",
        Method::POST,
        &object,
        &[("uploads".to_string(), String::new())],
        &[("x-amz-tagging".to_string(), tagging)],
        Vec::new(),
    )
    .await?;
    let upload_id = Xml::parse(&String::from_utf8_lossy(&answer))
        .ok()
        .and_then(|x| x.text_at(&["UploadId"]))
        .ok_or_else(|| AwsError::BadResponse {
            action: "CreateMultipartUpload".into(),
            message: "no UploadId".into(),
        })?;
    let result = async {
        let mut f = tokio::fs::File::open(file).await.map_err(io)?;
        let mut parts = Vec::new();
        loop {
            let mut data = Vec::with_capacity(part_size);
            let mut limited = (&mut f).take(part_size as u64);
            limited.read_to_end(&mut data).await.map_err(io)?;
            if data.is_empty() && !parts.is_empty() {
                break;
            }
            let number = parts.len() + 1;
            let (headers, _) = call(
                client,
                "UploadPart",
                Method::PUT,
                &object,
                &[
                    ("partNumber".to_string(), number.to_string()),
                    ("uploadId".to_string(), upload_id.clone()),
                ],
                &[],
                data,
            )
            .await?;
            let etag = headers
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            parts.push(etag);
            let last = limited_done(&mut f).await.map_err(io)?;
            if last {
                break;
            }
        }
        let body: String = parts
            .iter()
            .enumerate()
            .map(|(i, etag)| {
                format!(
                    "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                    i + 1,
                    xml_escape(etag)
                )
            })
            .collect();
        call(
            client,
            "CompleteMultipartUpload",
            Method::POST,
            &object,
            &[("uploadId".to_string(), upload_id.clone())],
            &[("content-type".to_string(), "application/xml".to_string())],
            format!("<CompleteMultipartUpload>{body}</CompleteMultipartUpload>").into_bytes(),
        )
        .await?;
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = call(
            client,
            "AbortMultipartUpload",
            Method::DELETE,
            &object,
            &[("uploadId".to_string(), upload_id)],
            &[],
            Vec::new(),
        )
        .await;
    }
    result
}

/// Whether the file is at its end.
async fn limited_done(f: &mut tokio::fs::File) -> std::io::Result<bool> {
    use tokio::io::AsyncSeekExt;
    let pos = f.stream_position().await?;
    let len = f.metadata().await?.len();
    Ok(pos >= len)
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Delete `bucket/key` (a missing object is fine).
pub async fn delete_object(client: &AwsClient, bucket: &str, key: &str) -> AwsResult<()> {
    match call(
        client,
        "DeleteObject",
        Method::DELETE,
        &path(bucket, key),
        &[],
        &[],
        Vec::new(),
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == nodepool_core::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The object `bucket/key`'s bytes (for tests and checks).
pub async fn get_object(client: &AwsClient, bucket: &str, key: &str) -> AwsResult<Vec<u8>> {
    let (_, body) = call(
        client,
        "GetObject",
        Method::GET,
        &path(bucket, key),
        &[],
        &[],
        Vec::new(),
    )
    .await?;
    Ok(body)
}

/// Every key of `bucket` (ListObjectsV2, every page).
pub async fn list_keys(client: &AwsClient, bucket: &str) -> AwsResult<Vec<String>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut query = vec![("list-type".to_string(), "2".to_string())];
        if let Some(t) = &token {
            query.push(("continuation-token".to_string(), t.clone()));
        }
        let (_, body) = call(
            client,
            "ListObjectsV2",
            Method::GET,
            &format!("/{bucket}"),
            &query,
            &[],
            Vec::new(),
        )
        .await?;
        let xml =
            Xml::parse(&String::from_utf8_lossy(&body)).map_err(|e| AwsError::BadResponse {
                action: "ListObjectsV2".into(),
                message: e,
            })?;
        out.extend(
            xml.children
                .iter()
                .filter(|c| c.name == "Contents")
                .filter_map(|c| c.text_at(&["Key"])),
        );
        token = match xml.text_at(&["IsTruncated"]).as_deref() {
            Some("true") => xml.text_at(&["NextContinuationToken"]),
            _ => None,
        };
        if token.is_none() {
            return Ok(out);
        }
    }
}

/// The tags of `bucket/key`.
pub async fn object_tags(
    client: &AwsClient,
    bucket: &str,
    key: &str,
) -> AwsResult<std::collections::BTreeMap<String, String>> {
    let (_, body) = call(
        client,
        "GetObjectTagging",
        Method::GET,
        &path(bucket, key),
        &[("tagging".to_string(), String::new())],
        &[],
        Vec::new(),
    )
    .await?;
    let xml = Xml::parse(&String::from_utf8_lossy(&body)).map_err(|e| AwsError::BadResponse {
        action: "GetObjectTagging".into(),
        message: e,
    })?;
    Ok(xml
        .child("TagSet")
        .map(|set| {
            set.children
                .iter()
                .filter_map(|t| {
                    Some((
                        t.text_at(&["Key"])?,
                        t.text_at(&["Value"]).unwrap_or_default(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default())
}
