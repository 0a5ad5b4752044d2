//! Tests of the simulator over HTTP.

use serde_json::{json, Value};

use super::*;

async fn started() -> (String, SimState) {
    let state = SimState::new(SimConfig::default());
    let (base, _task) = start(state.clone()).await.expect("simulator starts");
    (base, state)
}

async fn token(client: &reqwest::Client, base: &str) -> (String, Value) {
    let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "demo", "domain": {"name": "Default"}, "password": "demo-password"}}},
        "scope": {"project": {"name": "demo", "domain": {"name": "Default"}}}}});
    let resp = client
        .post(format!("{base}/identity/v3/auth/tokens"))
        .json(&body)
        .send()
        .await
        .expect("token request");
    assert_eq!(resp.status(), 201);
    let id = resp.headers()["X-Subject-Token"]
        .to_str()
        .expect("token header")
        .to_string();
    (id, resp.json().await.expect("token body"))
}

#[tokio::test]
async fn password_token_carries_a_catalog_of_the_four_services() {
    let (base, _) = started().await;
    let client = reqwest::Client::new();
    let (_, body) = token(&client, &base).await;
    let kinds: Vec<&str> = body["token"]["catalog"]
        .as_array()
        .expect("catalog")
        .iter()
        .filter_map(|s| s["type"].as_str())
        .collect();
    assert_eq!(kinds, ["identity", "compute", "image", "network"]);
    assert!(body["token"]["expires_at"]
        .as_str()
        .is_some_and(|e| e.ends_with('Z')));
}

#[tokio::test]
async fn wrong_password_and_missing_token_are_401() {
    let (base, _) = started().await;
    let client = reqwest::Client::new();
    let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "demo", "domain": {"name": "Default"}, "password": "wrong"}}}}});
    let resp = client
        .post(format!("{base}/identity/v3/auth/tokens"))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 401);
    let resp = client
        .get(format!("{base}/compute/v2.1/servers/detail"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn server_builds_then_becomes_active_and_quota_is_enforced() {
    let (base, state) = started().await;
    state.update(|c| c.config.limits.max_instances = 1);
    let client = reqwest::Client::new();
    let (tok, _) = token(&client, &base).await;
    let create = json!({"server": {"name": "n1", "flavorRef": "1", "imageRef": "img-cirros",
        "metadata": {"nodepool_node_id": "0001"}}});
    let resp = client
        .post(format!("{base}/compute/v2.1/servers"))
        .header("X-Auth-Token", &tok)
        .json(&create)
        .send()
        .await
        .expect("create");
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().await.expect("body")["server"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let again = client
        .post(format!("{base}/compute/v2.1/servers"))
        .header("X-Auth-Token", &tok)
        .json(&create)
        .send()
        .await
        .expect("create");
    assert_eq!(again.status(), 403);
    let msg = again.json::<Value>().await.expect("body")["forbidden"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(msg.starts_with("Quota exceeded for instances"), "{msg}");
    let status = |c: &Cloud| c.servers[&id].status(state::now());
    assert_eq!(state.read(status), "BUILD");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(state.read(status), "ACTIVE");
}

#[tokio::test]
async fn fault_rule_answers_with_the_status_a_given_number_of_times() {
    let (base, state) = started().await;
    state.set_faults(Faults {
        rules: vec![FaultRule {
            path: Some("/compute/v2.1/limits".to_string()),
            status: Some(500),
            times: Some(1),
            ..FaultRule::default()
        }],
        ..Faults::default()
    });
    let client = reqwest::Client::new();
    let (tok, _) = token(&client, &base).await;
    let get = || {
        client
            .get(format!("{base}/compute/v2.1/limits"))
            .header("X-Auth-Token", &tok)
            .send()
    };
    assert_eq!(get().await.expect("request").status(), 500);
    assert_eq!(get().await.expect("request").status(), 200);
}

#[tokio::test]
async fn dropped_connection_fault_closes_without_answer() {
    let (base, _) = started().await;
    let client = reqwest::Client::new();
    let faults = json!({"rules": [{"path": "/identity", "drop_connection": true, "times": 1}]});
    let resp = client
        .post(format!("{base}/_sim/faults"))
        .json(&faults)
        .send()
        .await
        .expect("admin");
    assert_eq!(resp.status(), 204);
    let err = client
        .get(format!("{base}/identity/v3"))
        .send()
        .await
        .expect_err("the connection is dropped");
    assert!(!err.is_status());
    let ok = client
        .get(format!("{base}/identity/v3"))
        .send()
        .await
        .expect("second request is answered");
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn state_file_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("np-sim-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("state.json");
    let first = SimState::with_state_file(path.clone(), SimConfig::default()).expect("state");
    first.update(|c| c.config.limits.max_cores = 7);
    drop(first);
    let second = SimState::with_state_file(path, SimConfig::default()).expect("state");
    assert_eq!(second.read(|c| c.config.limits.max_cores), 7);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn iso8601_formats_utc() {
    assert_eq!(iso8601(0.0, false), "1970-01-01T00:00:00Z");
    assert_eq!(
        iso8601(1_709_251_200.5, true),
        "2024-03-01T00:00:00.500000Z"
    );
}

#[tokio::test]
async fn image_schema_lists_the_accepted_disk_formats_and_create_enforces_them() {
    let state = SimState::new(SimConfig {
        disk_formats: vec!["raw".to_string(), "vhd".to_string()],
        ..SimConfig::default()
    });
    let (base, _task) = start(state.clone()).await.expect("simulator starts");
    let client = reqwest::Client::new();
    let (tok, _) = token(&client, &base).await;
    let schema: Value = client
        .get(format!("{base}/image/v2/schemas/image"))
        .header("X-Auth-Token", &tok)
        .send()
        .await
        .expect("schema")
        .json()
        .await
        .expect("json");
    assert_eq!(
        schema["properties"]["disk_format"]["enum"],
        json!([null, "raw", "vhd"])
    );
    let create = |body: Value| {
        client
            .post(format!("{base}/image/v2/images"))
            .header("X-Auth-Token", &tok)
            .json(&body)
            .send()
    };
    let refused = create(json!({"name": "a", "disk_format": "qcow2"}))
        .await
        .expect("create");
    assert_eq!(refused.status(), 400);
    let bad_ram = create(json!({"name": "b", "disk_format": "raw", "min_ram": "1024"}))
        .await
        .expect("create");
    assert_eq!(bad_ram.status(), 400);
    let ok: Value = create(json!({"name": "c", "disk_format": "raw", "min_ram": 512}))
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    assert_eq!(ok["min_ram"], 512);
}
