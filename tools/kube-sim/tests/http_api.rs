//! The API over HTTPS with an in-process [`Sim`]: status codes and Status
//! reasons, resourceVersions, watch semantics, pod and namespace lifecycles
//! and the admin routes.
#![allow(clippy::unwrap_used)] // tests fail by panicking

mod support;

use std::time::{Duration, Instant};

use nodepool_kube_sim::{Fault, Sim, SimOptions, Timing};
use reqwest::Method;
use serde_json::{json, Value};
use support::{pod, Api};

async fn sim(history_limit: usize) -> (Sim, Api) {
    let opts = SimOptions {
        timing: Timing {
            pod_ready_delay: Duration::from_millis(100),
            pod_terminate_delay: Duration::from_millis(300),
        },
        history_limit,
        ..SimOptions::default()
    };
    let sim = Sim::start(opts).await.unwrap();
    let api = Api::new(sim.url(), sim.token());
    (sim, api)
}

async fn namespace(api: &Api, name: &str) {
    let (code, body) = api
        .post("/api/v1/namespaces", json!({"metadata": {"name": name}}))
        .await;
    assert_eq!(code, 201, "{body}");
}

fn rv_of(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Read watch lines until `stop` says so or `limit` passes.
async fn watch_lines(
    api: &Api,
    path: &str,
    limit: Duration,
    stop: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let mut resp = api
        .http
        .get(format!("{}{path}", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let mut events = Vec::new();
    let mut buf = Vec::new();
    let deadline = Instant::now() + limit;
    while !stop(&events) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Ok(Some(chunk))) = tokio::time::timeout(left, resp.chunk()).await else {
            break;
        };
        buf.extend_from_slice(&chunk);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            events.push(serde_json::from_slice(&line).unwrap());
        }
    }
    events
}

#[tokio::test]
async fn errors_are_status_objects_with_kubernetes_codes() {
    let (_sim, api) = sim(1000).await;
    namespace(&api, "ns1").await;

    let (code, body) = api
        .post("/api/v1/namespaces", json!({"metadata": {"name": "ns1"}}))
        .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["status"], "Failure");
    assert_eq!(body["details"]["name"], "ns1");

    let (code, body) = api
        .post(
            "/api/v1/namespaces",
            json!({"metadata": {"name": "Not_DNS"}}),
        )
        .await;
    assert_eq!((code, body["reason"].as_str()), (422, Some("Invalid")));
    assert_eq!(body["details"]["causes"][0]["field"], "metadata.name");

    let no_containers = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
    let (code, body) = api.post("/api/v1/namespaces/ns1/pods", no_containers).await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (422, Some("Invalid")),
        "{body}"
    );

    let (code, body) = api.post("/api/v1/namespaces/nowhere/pods", pod("p")).await;
    assert_eq!((code, body["reason"].as_str()), (404, Some("NotFound")));
    assert_eq!(body["message"], "namespaces \"nowhere\" not found");

    let mut other_ns = pod("p");
    other_ns["metadata"]["namespace"] = json!("elsewhere");
    let (code, body) = api.post("/api/v1/namespaces/ns1/pods", other_ns).await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));

    let (code, body) = api.get("/api/v1/namespaces/ns1/pods/missing").await;
    assert_eq!((code, body["reason"].as_str()), (404, Some("NotFound")));
    assert_eq!(body["message"], "pods \"missing\" not found");

    let (code, body) = api
        .get("/apis/rbac.authorization.k8s.io/v1/namespaces/ns1/roles/missing")
        .await;
    assert_eq!(code, 404);
    assert_eq!(
        body["message"],
        "roles.rbac.authorization.k8s.io \"missing\" not found"
    );

    let (code, body) = api.get("/api/v1/namespaces?labelSelector=a%20in%20b").await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));

    let (code, _) = api.get("/api/v1/configmaps").await;
    assert_eq!(code, 404);

    let anonymous = Api::new(&api.base, "wrong");
    let (code, body) = anonymous.get("/api/v1/namespaces").await;
    assert_eq!((code, body["reason"].as_str()), (401, Some("Unauthorized")));
    let (code, body) = anonymous.get("/version").await;
    assert_eq!((code, body["major"].as_str()), (200, Some("1")));
}

#[tokio::test]
async fn replace_with_a_stale_resource_version_is_a_conflict() {
    let (_sim, api) = sim(1000).await;
    namespace(&api, "ns1").await;
    let sa = json!({"metadata": {"name": "sa", "labels": {"v": "1"}}});
    let (_, created) = api.post("/api/v1/namespaces/ns1/serviceaccounts", sa).await;
    let mut update = created.clone();
    update["metadata"]["labels"]["v"] = json!("2");
    let path = "/api/v1/namespaces/ns1/serviceaccounts/sa";
    let (code, updated) = api.call(Method::PUT, path, Some(update.clone())).await;
    assert_eq!(code, 200, "{updated}");
    assert!(rv_of(&updated) > rv_of(&created));
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
    let (code, body) = api.call(Method::PUT, path, Some(update)).await;
    assert_eq!((code, body["reason"].as_str()), (409, Some("Conflict")));

    let resp = api
        .http
        .patch(format!("{}{path}", api.base))
        .bearer_auth(&api.token)
        .header("Content-Type", "application/merge-patch+json")
        .body(r#"{"metadata":{"labels":{"v":null,"w":"3"}}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let patched: Value = resp.json().await.unwrap();
    assert_eq!(patched["metadata"]["labels"], json!({"w": "3"}));
}

#[tokio::test]
async fn pods_run_after_the_delay_and_terminate_with_a_grace_period() {
    let (_sim, api) = sim(1000).await;
    namespace(&api, "ns1").await;
    let generated = json!({
        "metadata": {"generateName": "node-"},
        "spec": {"containers": [{"name": "c", "image": "img"}]},
    });
    let (code, created) = api.post("/api/v1/namespaces/ns1/pods", generated).await;
    assert_eq!(code, 201);
    let name = created["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("node-") && name.len() == 10, "{name}");
    assert_eq!(created["status"]["phase"], "Pending");
    assert!(created["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    let path = format!("/api/v1/namespaces/ns1/pods/{name}");
    api.wait_for(&path, |_, p| p["status"]["phase"] == "Running")
        .await;
    let (_, running) = api.get(&path).await;
    assert_eq!(running["status"]["hostIP"], "10.0.0.2");
    assert_eq!(running["status"]["containerStatuses"][0]["name"], "c");
    assert!(running["status"]["containerStatuses"][0]["state"]["running"].is_object());

    let (code, deleting) = api.delete(&path).await;
    assert_eq!(code, 200);
    assert!(
        deleting["metadata"]["deletionTimestamp"].is_string(),
        "{deleting}"
    );
    assert_eq!(deleting["metadata"]["deletionGracePeriodSeconds"], 30);
    let (code, still) = api.get(&path).await;
    assert_eq!(code, 200, "a terminating pod is still there: {still}");
    api.wait_for(&path, |code, _| code == 404).await;

    // Grace period 0: gone at once.
    api.post("/api/v1/namespaces/ns1/pods", pod("now")).await;
    let (code, _) = api
        .call(
            Method::DELETE,
            "/api/v1/namespaces/ns1/pods/now",
            Some(json!({"gracePeriodSeconds": 0})),
        )
        .await;
    assert_eq!(code, 200);
    let (code, _) = api.get("/api/v1/namespaces/ns1/pods/now").await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn deleting_a_namespace_removes_everything_in_it() {
    let (sim, api) = sim(1000).await;
    namespace(&api, "ns1").await;
    api.post("/api/v1/namespaces/ns1/pods", pod("p")).await;
    let role = json!({"metadata": {"name": "r"}, "rules": []});
    let (code, _) = api
        .post(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/ns1/roles",
            role,
        )
        .await;
    assert_eq!(code, 201);
    let (code, ns) = api.delete("/api/v1/namespaces/ns1").await;
    assert_eq!(code, 200);
    assert_eq!(ns["status"]["phase"], "Terminating");
    let (code, body) = api.post("/api/v1/namespaces/ns1/pods", pod("late")).await;
    assert_eq!((code, body["reason"].as_str()), (403, Some("Forbidden")));
    api.wait_for("/api/v1/namespaces/ns1", |code, _| code == 404)
        .await;
    assert!(sim.list("pods", Some("ns1")).is_empty());
    assert!(sim.list("roles", Some("ns1")).is_empty());
    assert!(sim.list("serviceaccounts", Some("ns1")).is_empty());
}

#[tokio::test]
async fn watches_replay_from_a_resource_version_and_expire_past_the_history() {
    let (_sim, api) = sim(5).await;
    namespace(&api, "ns1").await;
    let (_, list) = api.get("/api/v1/namespaces/ns1/serviceaccounts").await;
    let start = rv_of(&list);
    for name in ["a", "b"] {
        api.post(
            "/api/v1/namespaces/ns1/serviceaccounts",
            json!({"metadata": {"name": name}}),
        )
        .await;
    }
    let events = watch_lines(
        &api,
        &format!("/api/v1/namespaces/ns1/serviceaccounts?watch=1&resourceVersion={start}"),
        Duration::from_secs(5),
        |e| e.len() >= 2,
    )
    .await;
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["object"]["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert!(events.iter().all(|e| e["type"] == "ADDED"));

    for i in 0..6 {
        api.post(
            "/api/v1/namespaces/ns1/secrets",
            json!({"metadata": {"name": format!("s{i}")}, "stringData": {"k": "v"}}),
        )
        .await;
    }
    let (code, body) = api
        .get(&format!(
            "/api/v1/namespaces/ns1/secrets?watch=1&resourceVersion={start}"
        ))
        .await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (410, Some("Expired")),
        "{body}"
    );

    // timeoutSeconds ends the stream.
    let began = Instant::now();
    let events = watch_lines(
        &api,
        "/api/v1/namespaces/ns1/secrets?watch=true&timeoutSeconds=1",
        Duration::from_secs(10),
        |_| false,
    )
    .await;
    assert!(began.elapsed() < Duration::from_secs(5));
    assert_eq!(events.len(), 6, "the current secrets as ADDED first");
}

#[tokio::test]
async fn selector_watches_see_objects_enter_and_leave() {
    let (_sim, api) = sim(1000).await;
    namespace(&api, "ns1").await;
    api.post(
        "/api/v1/namespaces/ns1/serviceaccounts",
        json!({"metadata": {"name": "sa", "labels": {"tier": "gold"}}}),
    )
    .await;
    let (_, list) = api.get("/api/v1/namespaces/ns1/serviceaccounts").await;
    let rv = rv_of(&list);
    let path = "/api/v1/namespaces/ns1/serviceaccounts/sa";
    for tier in ["silver", "gold"] {
        let resp = api
            .http
            .patch(format!("{}{path}", api.base))
            .bearer_auth(&api.token)
            .header("Content-Type", "application/strategic-merge-patch+json")
            .body(json!({"metadata": {"labels": {"tier": tier}}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    let events = watch_lines(
        &api,
        &format!(
            "/api/v1/namespaces/ns1/serviceaccounts?watch=1&resourceVersion={rv}&labelSelector=tier%3Dgold"
        ),
        Duration::from_secs(5),
        |e| e.len() >= 2,
    )
    .await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["DELETED", "ADDED"]);
}

#[tokio::test]
async fn admin_routes_fail_pods_and_count_objects() {
    let (sim, api) = sim(1000).await;
    namespace(&api, "ns1").await;
    let resp = api
        .http
        .put(format!("{}/_sim/pod-outcome", api.base))
        .json(&json!({"phase": "Failed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    api.post("/api/v1/namespaces/ns1/pods", pod("bad")).await;
    api.wait_for("/api/v1/namespaces/ns1/pods/bad", |_, p| {
        p["status"]["phase"] == "Failed"
    })
    .await;
    let (_, failed) = api.get("/api/v1/namespaces/ns1/pods/bad").await;
    assert_eq!(
        failed["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        1
    );
    sim.set_pod_outcome("Running");
    api.post("/api/v1/namespaces/ns1/pods", pod("stuck")).await;
    let resp = api
        .http
        .post(format!("{}/_sim/namespaces/ns1/pods/stuck/phase", api.base))
        .json(&json!({"phase": "Failed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (_, objects) = api.get("/_sim/objects").await;
    assert_eq!(objects["counts"]["pods"], 2);
    assert_eq!(objects["counts"]["namespaces"], 5);
    let phases: Vec<&str> = objects["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "Pod")
        .map(|o| o["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["Failed", "Failed"]);
}

#[tokio::test]
async fn unknown_top_level_fields_are_dropped_as_the_api_server_drops_them() {
    let (_sim, api) = sim(1000).await;
    namespace(&api, "ns1").await;
    // Upstream nodepool's bodies: `restartPolicy` beside `spec`, `userNames`
    // in a RoleBinding.
    let mut body = pod("p");
    body["restartPolicy"] = json!("Never");
    let (code, created) = api.post("/api/v1/namespaces/ns1/pods", body).await;
    assert_eq!(code, 201);
    assert!(created.get("restartPolicy").is_none(), "{created}");
    assert_eq!(created["spec"]["restartPolicy"], "Always");
    let binding = json!({
        "metadata": {"name": "zuul-role"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "zuul"},
        "subjects": [{"kind": "ServiceAccount", "name": "zuul-worker", "namespace": "ns1"}],
        "userNames": ["system:serviceaccount:ns1:zuul-worker"],
    });
    let (code, created) = api
        .post(
            "/apis/rbac.authorization.k8s.io/v1/namespaces/ns1/rolebindings",
            binding,
        )
        .await;
    assert_eq!(code, 201);
    assert!(created.get("userNames").is_none(), "{created}");
    assert_eq!(created["subjects"][0]["name"], "zuul-worker");
}

#[tokio::test]
async fn injected_faults_fail_matching_requests_with_status_errors() {
    let (sim, api) = sim(1000).await;
    namespace(&api, "ns1").await;
    sim.add_fault(Fault::new("POST", "/pods", 500, Some(1)));
    let (code, body) = api.post("/api/v1/namespaces/ns1/pods", pod("p")).await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (500, Some("InternalError"))
    );
    assert_eq!(body["kind"], "Status");
    let (code, _) = api.post("/api/v1/namespaces/ns1/pods", pod("p")).await;
    assert_eq!(code, 201, "the fault was used up");

    let resp = api
        .http
        .post(format!("{}/_sim/faults", api.base))
        .json(&json!({"method": "GET", "path_contains": "/namespaces", "code": 503}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    for _ in 0..2 {
        let (code, body) = api.get("/api/v1/namespaces").await;
        assert_eq!(
            (code, body["reason"].as_str()),
            (503, Some("ServiceUnavailable"))
        );
    }
    let (_, faults) = api.get("/_sim/faults").await;
    assert_eq!(faults["faults"][0]["code"], 503);
    let resp = api
        .http
        .delete(format!("{}/_sim/faults", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let (code, _) = api.get("/api/v1/namespaces").await;
    assert_eq!(code, 200);
}
