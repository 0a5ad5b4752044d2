//! AWS Signature Version 4 (the `AWS4-HMAC-SHA256` scheme every AWS API
//! takes), with `ring`'s HMAC and SHA-256 (already in the build for
//! rustls, so signing adds no crate).

use std::time::{SystemTime, UNIX_EPOCH};

use nodepool_core::Secret;
use ring::{digest, hmac};

/// Access key, secret key and optional session token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `aws_access_key_id` (not secret by itself; shown in logs as AWS does).
    pub access_key_id: String,
    /// `aws_secret_access_key`.
    pub secret_access_key: Secret,
    /// `aws_session_token` of temporary credentials.
    pub session_token: Option<Secret>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token)
            .finish()
    }
}

/// What is signed: one HTTP request.
#[derive(Debug, Clone)]
pub struct SignableRequest<'a> {
    /// `GET`, `POST`, `PUT`, ...
    pub method: &'a str,
    /// The `Host` header (with `:port` when not the scheme's default).
    pub host: &'a str,
    /// The path, already URI-encoded ([`encode_path`]).
    pub path: &'a str,
    /// Query parameters, not encoded.
    pub query: &'a [(String, String)],
    /// Headers to sign besides `host` and `x-amz-date` (names any case).
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body ([`sha256_hex`]).
    pub payload_sha256: &'a str,
}

/// The hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// SigV4's URI encoding: every byte but `A-Z a-z 0-9 - _ . ~` as `%XX`;
/// `/` too unless `keep_slash`.
pub fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A path with each segment encoded.
pub fn encode_path(path: &str) -> String {
    uri_encode(path, true)
}

/// The canonical query string: encoded pairs sorted by name, then value.
pub fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// `(YYYYMMDD, YYYYMMDDTHHMMSSZ)` of a time, in UTC.
pub fn amz_date(time: SystemTime) -> (String, String) {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    let date = format!("{y:04}{m:02}{d:02}");
    let stamp = format!(
        "{date}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    (date, stamp)
}

/// Howard Hinnant's days-to-civil: the proleptic Gregorian date of a day
/// count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    hmac::sign(&key, data.as_bytes()).as_ref().to_vec()
}

/// The signing key of a day, region and service.
pub fn signing_key(secret: &Secret, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac_sha256(format!("AWS4{}", secret.expose()).as_bytes(), date);
    let k_region = hmac_sha256(&k_date, region);
    let k_service = hmac_sha256(&k_region, service);
    hmac_sha256(&k_service, "aws4_request")
}

/// The headers to add to `req` to sign it at `time`: `x-amz-date`,
/// `x-amz-security-token` (temporary credentials) and `authorization`.
pub fn sign(
    creds: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
    req: &SignableRequest<'_>,
) -> Vec<(String, String)> {
    let (date, stamp) = amz_date(time);
    let mut added = vec![("x-amz-date".to_string(), stamp.clone())];
    if let Some(token) = &creds.session_token {
        added.push((
            "x-amz-security-token".to_string(),
            token.expose().to_string(),
        ));
    }
    let mut headers: Vec<(String, String)> = req
        .headers
        .iter()
        .chain(added.iter())
        .map(|(k, v)| {
            (
                k.to_ascii_lowercase(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    headers.push(("host".to_string(), req.host.to_string()));
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        req.method,
        req.path,
        canonical_query(req.query),
        req.payload_sha256
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    );
    let key = signing_key(&creds.secret_access_key, &date, region, service);
    let signature = hex(&hmac_sha256(&key, &string_to_sign));
    added.push((
        "authorization".to_string(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, \
             Signature={signature}",
            creds.access_key_id
        ),
    ));
    added
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn example_creds() -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: None,
        }
    }

    /// 2015-08-30T12:36:00Z, the time of AWS's SigV4 test suite.
    fn suite_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    #[test]
    fn dates_are_formatted_in_utc() {
        assert_eq!(
            amz_date(suite_time()),
            ("20150830".to_string(), "20150830T123600Z".to_string())
        );
        assert_eq!(amz_date(UNIX_EPOCH).1, "19700101T000000Z");
        // 2024-02-29T23:59:59Z: a leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_251_199);
        assert_eq!(amz_date(leap).1, "20240229T235959Z");
    }

    /// The derived key of AWS's "Examples of how to derive a signing key".
    #[test]
    fn signing_key_matches_the_documented_example() {
        let key = signing_key(
            &Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            "20120215",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex(&key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    fn authorization(headers: &[(String, String)]) -> &str {
        headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    }

    /// `get-vanilla` of AWS's SigV4 test suite.
    #[test]
    fn get_vanilla_matches_the_test_suite() {
        let empty = sha256_hex(b"");
        let req = SignableRequest {
            method: "GET",
            host: "example.amazonaws.com",
            path: "/",
            query: &[],
            headers: &[],
            payload_sha256: &empty,
        };
        let headers = sign(&example_creds(), "us-east-1", "service", suite_time(), &req);
        assert_eq!(
            authorization(&headers),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    /// The IAM `ListUsers` example of AWS's SigV4 documentation.
    #[test]
    fn iam_list_users_matches_the_documented_example() {
        let empty = sha256_hex(b"");
        let query = [
            ("Action".to_string(), "ListUsers".to_string()),
            ("Version".to_string(), "2010-05-08".to_string()),
        ];
        let headers = [(
            "Content-Type".to_string(),
            "application/x-www-form-urlencoded; charset=utf-8".to_string(),
        )];
        let req = SignableRequest {
            method: "GET",
            host: "iam.amazonaws.com",
            path: "/",
            query: &query,
            headers: &headers,
            payload_sha256: &empty,
        };
        let signed = sign(&example_creds(), "us-east-1", "iam", suite_time(), &req);
        assert_eq!(
            authorization(&signed),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn query_and_path_are_encoded_as_sigv4_says() {
        let query = [
            ("b".to_string(), "a b".to_string()),
            ("a".to_string(), "x/y~z*".to_string()),
        ];
        assert_eq!(canonical_query(&query), "a=x%2Fy~z%2A&b=a%20b");
        assert_eq!(encode_path("/bucket/my key+1"), "/bucket/my%20key%2B1");
    }

    #[test]
    fn session_token_is_signed_and_secrets_never_print() {
        let mut creds = example_creds();
        creds.session_token = Some(Secret::new("token-value"));
        let empty = sha256_hex(b"");
        let req = SignableRequest {
            method: "GET",
            host: "h",
            path: "/",
            query: &[],
            headers: &[],
            payload_sha256: &empty,
        };
        let headers = sign(&creds, "r", "s", suite_time(), &req);
        assert!(headers
            .iter()
            .any(|(k, v)| k == "x-amz-security-token" && v == "token-value"));
        assert!(
            authorization(&headers).contains("SignedHeaders=host;x-amz-date;x-amz-security-token")
        );
        let debug = format!("{creds:?}");
        assert!(
            !debug.contains("wJalr") && !debug.contains("token-value"),
            "{debug}"
        );
    }
}
