//! Keystone v3: `POST /v3/auth/tokens` with the `password` and
//! `application_credential` methods, `GET /v3/auth/tokens` to validate, and
//! the version documents.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::config::SimUser;
use crate::state::{new_id, now, Cloud, Token};
use crate::{base_url, error_response, iso8601, Service, SimState};

pub(crate) fn routes() -> Router<SimState> {
    Router::new()
        .route("/", get(versions))
        .route("/v3", get(version))
        .route("/v3/", get(version))
        .route("/v3/auth/tokens", post(issue).get(validate))
}

fn version_doc(base: &str) -> Value {
    json!({
        "id": "v3.14",
        "status": "stable",
        "updated": "2020-04-07T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{base}/identity/v3/")}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]
    })
}

async fn versions(headers: HeaderMap) -> Response {
    let base = base_url(&headers);
    crate::json(
        StatusCode::MULTIPLE_CHOICES,
        json!({"versions": {"values": [version_doc(&base)]}}),
    )
}

async fn version(headers: HeaderMap) -> Response {
    let base = base_url(&headers);
    crate::json(StatusCode::OK, json!({"version": version_doc(&base)}))
}

fn unauthorized() -> Response {
    error_response(
        Service::Identity,
        StatusCode::UNAUTHORIZED,
        "The request you have made requires authentication.",
    )
}

fn bad_request(message: &str) -> Response {
    error_response(Service::Identity, StatusCode::BAD_REQUEST, message)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// The domain a `{"domain": {"name"|"id"}}` names matches `domain`
/// (Keystone's default domain has id `default` and name `Default`).
fn domain_matches(v: &Value, domain: &str) -> bool {
    let Some(d) = v.get("domain") else {
        return false;
    };
    let by_name = str_at(d, &["name"]).is_some_and(|n| n == domain);
    let by_id = str_at(d, &["id"]).is_some_and(|id| id.eq_ignore_ascii_case(domain));
    by_name || by_id
}

fn find_password_user<'a>(cloud: &'a Cloud, auth: &Value) -> Option<&'a SimUser> {
    let user = auth.get("identity")?.get("password")?.get("user")?;
    let password = str_at(user, &["password"])?;
    let found = if let Some(id) = str_at(user, &["id"]) {
        cloud.config.users.iter().find(|u| u.id == id)
    } else {
        let name = str_at(user, &["name"])?;
        cloud
            .config
            .users
            .iter()
            .find(|u| u.name == name && domain_matches(user, &u.domain))
    }?;
    (found.password == password).then_some(found)
}

fn scope_matches(user: &SimUser, auth: &Value) -> bool {
    let Some(project) = auth.get("scope").and_then(|s| s.get("project")) else {
        // Unscoped tokens are allowed; they just have no catalog.
        return true;
    };
    if let Some(id) = str_at(project, &["id"]) {
        return id == user.project_id;
    }
    str_at(project, &["name"]).is_some_and(|n| n == user.project)
        && domain_matches(project, &user.project_domain)
}

fn find_app_credential_user<'a>(cloud: &'a Cloud, auth: &Value) -> Option<&'a SimUser> {
    let cred = auth.get("identity")?.get("application_credential")?;
    let secret = str_at(cred, &["secret"])?;
    let found = if let Some(id) = str_at(cred, &["id"]) {
        cloud.config.app_credentials.iter().find(|c| c.id == id)
    } else {
        let name = str_at(cred, &["name"])?;
        let user = str_at(cred, &["user", "name"]).or(str_at(cred, &["user", "id"]))?;
        cloud
            .config
            .app_credentials
            .iter()
            .find(|c| c.name == name && c.user == user)
    }?;
    if found.secret != secret {
        return None;
    }
    cloud.config.users.iter().find(|u| u.name == found.user)
}

/// The service catalog; Cinder's `block-storage` endpoint (scoped to
/// `project_id`, as Cinder's v3 URLs are) only when `volumes`.
fn catalog(base: &str, region: &str, project_id: &str, volumes: bool) -> Value {
    let service = |kind: &str, name: &str, url: String| {
        let endpoints: Vec<Value> = ["public", "internal", "admin"]
            .iter()
            .map(|iface| {
                json!({"id": new_id(), "interface": iface, "region": region, "region_id": region, "url": url})
            })
            .collect();
        json!({"id": new_id(), "type": kind, "name": name, "endpoints": endpoints})
    };
    let mut services = vec![
        service("identity", "keystone", format!("{base}/identity")),
        service("compute", "nova", format!("{base}/compute/v2.1")),
        service("image", "glance", format!("{base}/image")),
        service("network", "neutron", format!("{base}/network")),
    ];
    if volumes {
        services.push(service(
            "block-storage",
            "cinder",
            format!("{base}/volume/v3/{project_id}"),
        ));
    }
    Value::Array(services)
}

fn token_body(base: &str, cloud: &Cloud, user: &SimUser, token: &Token, scoped: bool) -> Value {
    let mut body = json!({
        "methods": [token.method],
        "user": {"id": user.id, "name": user.name, "domain": {"id": "default", "name": user.domain}, "password_expires_at": null},
        "audit_ids": [new_id()],
        "issued_at": iso8601(token.issued_at, true),
        "expires_at": iso8601(token.expires_at, true),
    });
    if scoped {
        body["project"] = json!({"id": user.project_id, "name": user.project, "domain": {"id": "default", "name": user.project_domain}});
        body["roles"] =
            json!([{"id": "r-member", "name": "member"}, {"id": "r-reader", "name": "reader"}]);
        body["catalog"] = catalog(
            base,
            &cloud.config.region,
            &user.project_id,
            cloud.config.volume_limits.is_some(),
        );
        body["is_domain"] = json!(false);
    }
    if token.method == "application_credential" {
        body["application_credential"] =
            json!({"id": "ac", "name": "nodepool", "restricted": true});
    }
    json!({ "token": body })
}

async fn issue(
    State(state): State<SimState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("Malformed JSON in the request body.");
    };
    let Some(auth) = request.get("auth") else {
        return bad_request("'auth' is a required property");
    };
    let methods: Vec<String> = auth
        .get("identity")
        .and_then(|i| i.get("methods"))
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let base = base_url(&headers);
    state.update(|cloud| {
        let (user, method, scoped) = match methods.first().map(String::as_str) {
            Some("password") => match find_password_user(cloud, auth) {
                Some(u) if scope_matches(u, auth) => {
                    (u.clone(), "password", auth.get("scope").is_some())
                }
                _ => return unauthorized(),
            },
            Some("application_credential") => match find_app_credential_user(cloud, auth) {
                Some(u) => (u.clone(), "application_credential", true),
                None => return unauthorized(),
            },
            _ => return unauthorized(),
        };
        let t = now();
        let token = Token {
            user: user.name.clone(),
            method: method.to_string(),
            issued_at: t,
            expires_at: t + cloud.config.token_ttl_secs,
        };
        let id = format!("gAAAA{}", new_id().replace('-', ""));
        let body = token_body(&base, cloud, &user, &token, scoped);
        cloud.tokens.insert(id.clone(), token);
        cloud.tokens_issued += 1;
        let mut resp = crate::json(StatusCode::CREATED, body);
        if let Ok(v) = id.parse() {
            resp.headers_mut().insert("X-Subject-Token", v);
        }
        resp
    })
}

async fn validate(State(state): State<SimState>, headers: HeaderMap) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (Some(auth), Some(subject)) = (header("X-Auth-Token"), header("X-Subject-Token")) else {
        return unauthorized();
    };
    let base = base_url(&headers);
    state.read(|cloud| {
        let t = now();
        let valid = |id: &str| cloud.tokens.get(id).filter(|tok| tok.expires_at > t);
        if valid(&auth).is_none() {
            return unauthorized();
        }
        let Some(token) = valid(&subject) else {
            return error_response(
                Service::Identity,
                StatusCode::NOT_FOUND,
                "Could not find token.",
            );
        };
        match cloud.config.users.iter().find(|u| u.name == token.user) {
            Some(user) => {
                let mut resp =
                    crate::json(StatusCode::OK, token_body(&base, cloud, user, token, true));
                if let Ok(v) = subject.parse() {
                    resp.headers_mut().insert("X-Subject-Token", v);
                }
                resp
            }
            None => StatusCode::NOT_FOUND.into_response(),
        }
    })
}
