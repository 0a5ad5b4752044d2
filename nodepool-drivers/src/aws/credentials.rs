//! Credentials and endpoints found as the AWS SDKs find them.
//!
//! Credentials: with `profile-name` set, that profile of the shared files;
//! otherwise `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`,
//! then the profile `AWS_PROFILE` names (else `default`). The shared files
//! are `AWS_SHARED_CREDENTIALS_FILE` (default `~/.aws/credentials`,
//! sections `[name]`) and `AWS_CONFIG_FILE` (default `~/.aws/config`,
//! sections `[profile name]` or `[default]`); the credentials file wins.
//!
//! Endpoints: `AWS_ENDPOINT_URL_<SERVICE>` (`EC2`, `S3`, `EBS`,
//! `SERVICE_QUOTAS`), else `AWS_ENDPOINT_URL`, else the service's regional
//! endpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nodepool_core::Secret;

use super::error::AwsError;
use super::sigv4::Credentials;

/// One AWS service the driver calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// EC2 (query API).
    Ec2,
    /// S3 (REST, path-style).
    S3,
    /// EBS direct APIs.
    Ebs,
    /// Service Quotas (JSON API).
    ServiceQuotas,
}

impl Service {
    /// The SigV4 signing name.
    pub fn signing_name(self) -> &'static str {
        match self {
            Service::Ec2 => "ec2",
            Service::S3 => "s3",
            Service::Ebs => "ebs",
            Service::ServiceQuotas => "servicequotas",
        }
    }

    /// The suffix of its `AWS_ENDPOINT_URL_<SUFFIX>` variable.
    pub fn env_suffix(self) -> &'static str {
        match self {
            Service::Ec2 => "EC2",
            Service::S3 => "S3",
            Service::Ebs => "EBS",
            Service::ServiceQuotas => "SERVICE_QUOTAS",
        }
    }

    fn default_endpoint(self, region: &str) -> String {
        match self {
            Service::Ec2 => format!("https://ec2.{region}.amazonaws.com"),
            Service::S3 => format!("https://s3.{region}.amazonaws.com"),
            Service::Ebs => format!("https://ebs.{region}.amazonaws.com"),
            Service::ServiceQuotas => format!("https://servicequotas.{region}.amazonaws.com"),
        }
    }
}

/// The endpoint of `service` in `region`.
pub fn endpoint(service: Service, region: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let specific = format!("AWS_ENDPOINT_URL_{}", service.env_suffix());
    env(&specific)
        .filter(|v| !v.is_empty())
        .or_else(|| env("AWS_ENDPOINT_URL").filter(|v| !v.is_empty()))
        .unwrap_or_else(|| service.default_endpoint(region))
        .trim_end_matches('/')
        .to_string()
}

/// Sections of an INI file: name → key → value.
fn parse_ini(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim().to_string();
            out.entry(name.clone()).or_default();
            section = Some(name);
            continue;
        }
        if let (Some(section), Some((k, v))) = (&section, line.split_once('=')) {
            out.entry(section.clone())
                .or_default()
                .insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    out
}

fn home(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    env("HOME").map(PathBuf::from).unwrap_or_default()
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn from_section(section: &BTreeMap<String, String>) -> Option<Credentials> {
    let id = section.get("aws_access_key_id")?;
    let secret = section.get("aws_secret_access_key")?;
    Some(Credentials {
        access_key_id: id.clone(),
        secret_access_key: Secret::new(secret.clone()),
        session_token: section
            .get("aws_session_token")
            .map(|t| Secret::new(t.clone())),
    })
}

/// The credentials of profile `profile` in the shared files.
fn profile_credentials(
    profile: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(Credentials, PathBuf)> {
    let creds_file = env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home(env).join(".aws/credentials"));
    if let Some(text) = read(&creds_file) {
        if let Some(c) = parse_ini(&text).get(profile).and_then(from_section) {
            return Some((c, creds_file));
        }
    }
    let config_file = env("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home(env).join(".aws/config"));
    let text = read(&config_file)?;
    let sections = parse_ini(&text);
    let key = if profile == "default" {
        "default".to_string()
    } else {
        format!("profile {profile}")
    };
    sections
        .get(&key)
        .and_then(from_section)
        .map(|c| (c, config_file))
}

/// The credentials to sign with; `profile_name` is the provider's
/// `profile-name`.
pub fn resolve(
    profile_name: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Credentials, AwsError> {
    if let Some(profile) = profile_name {
        return profile_credentials(profile, env)
            .map(|(c, _)| c)
            .ok_or_else(|| {
                AwsError::Config(format!(
                    "profile {profile:?} has no aws_access_key_id and aws_secret_access_key \
                     in the shared credentials or config file"
                ))
            });
    }
    let id = env("AWS_ACCESS_KEY_ID").filter(|v| !v.is_empty());
    let secret = env("AWS_SECRET_ACCESS_KEY").filter(|v| !v.is_empty());
    if let (Some(id), Some(secret)) = (id, secret) {
        return Ok(Credentials {
            access_key_id: id,
            secret_access_key: Secret::new(secret),
            session_token: env("AWS_SESSION_TOKEN")
                .filter(|v| !v.is_empty())
                .map(Secret::new),
        });
    }
    let profile = env("AWS_PROFILE")
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "default".to_string());
    profile_credentials(&profile, env)
        .map(|(c, _)| c)
        .ok_or_else(|| {
            AwsError::Config(format!(
                "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give \
                 profile {profile:?} keys in ~/.aws/credentials (AWS_SHARED_CREDENTIALS_FILE) \
                 or ~/.aws/config (AWS_CONFIG_FILE)"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn environment_keys_are_used_without_a_profile() {
        let env = env_of(vec![
            ("AWS_ACCESS_KEY_ID", "AKID".into()),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t".into()),
            ("AWS_SESSION_TOKEN", "tok".into()),
        ]);
        let c = resolve(None, &env).expect("credentials");
        assert_eq!(c.access_key_id, "AKID");
        assert_eq!(c.secret_access_key.expose(), "s3cr3t");
        assert_eq!(c.session_token.as_ref().map(Secret::expose), Some("tok"));
    }

    #[test]
    fn profiles_come_from_the_shared_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let creds = dir.path().join("credentials");
        let config = dir.path().join("config");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = DEF\naws_secret_access_key = defsecret\n\n\
             [ci]\naws_access_key_id=CI\naws_secret_access_key=cisecret\n",
        )
        .expect("write");
        std::fs::write(
            &config,
            "[profile other]\naws_access_key_id = OTHER\naws_secret_access_key = o\n\
             aws_session_token = t\n",
        )
        .expect("write");
        let env = env_of(vec![
            ("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()),
            ("AWS_CONFIG_FILE", config.display().to_string()),
            ("AWS_ACCESS_KEY_ID", "ENV".into()),
            ("AWS_SECRET_ACCESS_KEY", "envsecret".into()),
        ]);
        // profile-name wins over the environment, as boto3's Session does.
        assert_eq!(resolve(Some("ci"), &env).expect("ci").access_key_id, "CI");
        let other = resolve(Some("other"), &env).expect("other");
        assert_eq!(other.access_key_id, "OTHER");
        assert!(other.session_token.is_some());
        assert_eq!(resolve(None, &env).expect("env").access_key_id, "ENV");
        let files_only = env_of(vec![
            ("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()),
            ("AWS_CONFIG_FILE", config.display().to_string()),
            ("AWS_PROFILE", "ci".into()),
        ]);
        assert_eq!(
            resolve(None, &files_only)
                .expect("AWS_PROFILE")
                .access_key_id,
            "CI"
        );
        let missing = resolve(Some("nope"), &env).expect_err("no such profile");
        assert!(missing.to_string().contains("\"nope\""), "{missing}");
        assert!(!missing.to_string().contains("cisecret"));
    }

    #[test]
    fn endpoints_follow_the_sdk_variables() {
        let env = env_of(vec![
            ("AWS_ENDPOINT_URL", "http://localhost:5000/".into()),
            ("AWS_ENDPOINT_URL_EC2", "http://ec2.local:1".into()),
        ]);
        assert_eq!(
            endpoint(Service::Ec2, "us-west-2", &env),
            "http://ec2.local:1"
        );
        assert_eq!(
            endpoint(Service::S3, "us-west-2", &env),
            "http://localhost:5000"
        );
        let none = env_of(vec![]);
        assert_eq!(
            endpoint(Service::ServiceQuotas, "eu-west-1", &none),
            "https://servicequotas.eu-west-1.amazonaws.com"
        );
    }
}
