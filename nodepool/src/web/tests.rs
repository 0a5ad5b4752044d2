//! The router against a `MemoryStore`, through `tower::ServiceExt::oneshot`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use http_body_util::BodyExt;
use nodepool_core::config::{Config, Label};
use nodepool_core::model::{Component, Node, NodeRequest, NodeState, RequestState, POOL};
use nodepool_core::store::{LockOptions, LockTarget, MemoryStore, NodeStore};
use serde_json::Value;
use tower::ServiceExt;

use super::accept::{wanted_format, Format};
use super::{router, Metrics, WebState};

const TOKEN: &str = "s3cret-token";

fn config() -> Config {
    Config {
        labels: vec![Label {
            name: "small".into(),
            min_ready: 0,
            max_ready_age: 0,
        }],
        ..Config::default()
    }
}

fn state_with(store: &MemoryStore, token: Option<&str>) -> Arc<WebState> {
    let store: Arc<dyn NodeStore> = Arc::new(store.session());
    Arc::new(WebState::new(store, config(), token.map(str::to_owned)))
}

async fn call(app: &Router, request: Request<Body>) -> (StatusCode, String, Response<()>) {
    let response = app.clone().oneshot(request).await.expect("router answers");
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    let text = String::from_utf8(bytes.to_vec()).expect("utf-8 body");
    (parts.status, text, Response::from_parts(parts, ()))
}

fn get(path: &str, accept: Option<&str>) -> Request<Body> {
    let mut builder = Request::get(path);
    if let Some(accept) = accept {
        builder = builder.header(header::ACCEPT, accept);
    }
    builder.body(Body::empty()).expect("request")
}

async fn ready_node(store: &MemoryStore, label: &str) -> String {
    let mut node = Node::new(NodeState::Ready);
    node.provider = Some("fake-provider".into());
    node.labels = vec![label.into()];
    node.interface_ip = Some("192.0.2.10".into());
    node.username = Some("zuul".into());
    store.create_node(&node).await.expect("create node")
}

#[test]
fn accept_header_decides_format_as_webob() {
    assert_eq!(wanted_format(None), Some(Format::Pretty));
    assert_eq!(wanted_format(Some("application/json")), Some(Format::Json));
    assert_eq!(wanted_format(Some("APPLICATION/JSON")), Some(Format::Json));
    assert_eq!(wanted_format(Some("application/*")), Some(Format::Json));
    assert_eq!(wanted_format(Some("*/*")), Some(Format::Pretty));
    // Equal weights: the offers' order (text first) wins, not the header's.
    assert_eq!(
        wanted_format(Some("application/json, text/plain")),
        Some(Format::Pretty)
    );
    assert_eq!(
        wanted_format(Some("text/html;q=0.5, application/json")),
        Some(Format::Json)
    );
    assert_eq!(
        wanted_format(Some("text/*;q=0.1, */*;q=0.5")),
        Some(Format::Json)
    );
    // Malformed headers count as absent.
    assert_eq!(wanted_format(Some("garbage;;")), Some(Format::Pretty));
    // Nothing acceptable (upstream fails with a 500).
    assert_eq!(wanted_format(Some("image/png")), None);
    assert_eq!(wanted_format(Some("application/json;q=0")), None);
    assert_eq!(wanted_format(Some("application/json; charset=utf-8")), None);
}

#[tokio::test]
async fn node_list_serves_json_when_asked_and_text_otherwise() {
    let store = MemoryStore::new();
    let id = ready_node(&store, "small").await;
    let app = router(state_with(&store, None));

    let (status, body, response) = call(&app, get("/node-list", Some("application/json"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(response.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert_eq!(
        response.headers()[header::CACHE_CONTROL],
        "max-age=1, public"
    );
    let rows: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(rows[0]["id"], id.as_str());
    assert_eq!(rows[0]["label"], serde_json::json!(["small"]));
    assert_eq!(rows[0]["locked"], "unlocked");
    assert_eq!(rows[0]["state"], "ready");

    let (status, body, response) = call(&app, get("/node-list", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/plain; charset=UTF-8"
    );
    let lines: Vec<&str> = body.lines().collect();
    assert!(lines[0].starts_with("+----"));
    assert!(lines[1].starts_with("| ID         | Provider      | Label | Server ID |"));
    assert!(lines[3].starts_with(&format!("| {id} | fake-provider | small |")));
}

#[tokio::test]
async fn fields_query_selects_text_columns() {
    let store = MemoryStore::new();
    let id = ready_node(&store, "small").await;
    let app = router(state_with(&store, None));
    let (status, body, _) = call(&app, get("/node-list?fields=state,id", None)).await;
    assert_eq!(status, StatusCode::OK);
    let expected = format!(
        "+------------+-------+\n\
         | ID         | State |\n\
         +------------+-------+\n\
         | {id} | ready |\n\
         +------------+-------+"
    );
    assert_eq!(body, expected);
}

#[tokio::test]
async fn fields_query_with_an_unknown_name_is_a_bad_request_naming_the_valid_ones() {
    let store = MemoryStore::new();
    ready_node(&store, "small").await;
    let app = router(state_with(&store, None));
    let (status, body, _) = call(&app, get("/node-list?fields=state,colour", None)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.starts_with(
            "unknown field colour in fields=; the fields of /node-list are: id, provider,"
        ),
        "{body}"
    );
    assert!(body.contains(", state,"), "{body}");
}

#[tokio::test]
async fn node_id_query_lists_one_node_and_shows_its_lock() {
    let store = MemoryStore::new();
    let first = ready_node(&store, "small").await;
    let second = ready_node(&store, "small").await;
    store
        .lock(&LockTarget::Node(second.clone()), &LockOptions::try_once())
        .await
        .expect("lock");
    let app = router(state_with(&store, None));
    let path = format!("/node-list?node_id={second}");
    let (_, body, _) = call(&app, get(&path, Some("application/json"))).await;
    let rows: Value = serde_json::from_str(&body).expect("json");
    let rows = rows.as_array().expect("list");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], second.as_str());
    assert_eq!(rows[0]["locked"], "locked");
    assert_ne!(rows[0]["id"], first.as_str());
}

#[tokio::test]
async fn request_and_label_lists_read_the_store() {
    let store = MemoryStore::new();
    let mut request = NodeRequest::new(["small"]);
    request.requestor = Some("zuul".into());
    let request_id = store
        .create_request(&request, "100")
        .await
        .expect("request");
    let mut pool = Component::new(POOL, "host");
    pool.supported_labels = Some(vec!["small".into(), "big".into()]);
    store
        .register_component(POOL, "host-pool", &pool)
        .await
        .expect("register");
    let app = router(state_with(&store, None));

    let (_, body, _) = call(&app, get("/request-list", Some("application/json"))).await;
    let rows: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(rows[0]["id"], request_id.as_str());
    assert_eq!(rows[0]["state"], "requested");
    assert_eq!(rows[0]["node_types"], serde_json::json!(["small"]));

    let (_, body, _) = call(&app, get("/label-list", Some("application/json"))).await;
    assert_eq!(body, r#"[{"label": "big"}, {"label": "small"}]"#);
}

#[tokio::test]
async fn unknown_path_is_404_and_unacceptable_accept_is_406() {
    let store = MemoryStore::new();
    let app = router(state_with(&store, None));
    let (status, _, _) = call(&app, get("/nope", None)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = call(&app, get("/node-list", Some("image/png"))).await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn ready_is_503_until_set_then_200() {
    let store = MemoryStore::new();
    let state = state_with(&store, None);
    let app = router(Arc::clone(&state));
    let (status, _, _) = call(&app, get("/ready", None)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, body, _) = call(&app, get("/healthz", None)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "OK"));
    state.set_ready(true);
    let (status, body, _) = call(&app, get("/ready", None)).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "OK"));
}

#[tokio::test]
async fn metrics_expose_nodes_by_state_and_launch_counters() {
    let store = MemoryStore::new();
    ready_node(&store, "small").await;
    let counters = nodepool_core::launcher::CounterSnapshot {
        launches_ready: 1,
        launches_failed: 1,
        launch_millis_total: 2000,
        requests_fulfilled: 3,
        ..Default::default()
    };
    let state = Arc::new(
        WebState::new(Arc::new(store.session()), config(), None)
            .with_metrics(Arc::new(Metrics::from_source(Arc::new(move || counters)))),
    );
    let app = router(Arc::clone(&state));
    let (status, body, _) = call(&app, get("/metrics", None)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("nodepool_nodes{state=\"ready\"} 1\n"),
        "{body}"
    );
    assert!(body.contains("nodepool_nodes{state=\"building\"} 0\n"));
    assert!(body.contains("nodepool_requests{state=\"requested\"} 0\n"));
    assert!(body.contains("nodepool_launches_total{result=\"ready\"} 1\n"));
    assert!(body.contains("nodepool_launches_total{result=\"error\"} 1\n"));
    assert!(body.contains("nodepool_launch_duration_seconds_sum 2\n"));
    assert!(body.contains("nodepool_launch_duration_seconds_count 1\n"));
    assert!(body.contains("nodepool_requests_handled_total{result=\"fulfilled\"} 3\n"));
}

#[tokio::test]
async fn metrics_expose_launch_results_by_provider_az_requestor_and_leaks() {
    use nodepool_core::launcher::{KeyedCounts, LaunchKey, LaunchTotals};
    let store = MemoryStore::new();
    let keyed = KeyedCounts {
        launches: vec![(
            LaunchKey {
                provider: "fake-a".to_owned(),
                az: Some("az1".to_owned()),
                requestor: Some("zuul\"1".to_owned()),
                result: "error.quota",
            },
            LaunchTotals {
                count: 2,
                millis: 1500,
            },
        )],
        leaked_instances: vec![("fake-a".to_owned(), 4)],
        leaked_resources: vec![
            ("fake-a".to_owned(), "floatingips", 1),
            ("fake-a".to_owned(), "ports", 2),
        ],
        validations: vec![(
            "ubuntu".to_owned(),
            "failed",
            LaunchTotals {
                count: 3,
                millis: 4500,
            },
        )],
    };
    let metrics = Metrics::from_source(Arc::new(Default::default))
        .with_keyed(Arc::new(move || keyed.clone()));
    let state = Arc::new(
        WebState::new(Arc::new(store.session()), config(), None).with_metrics(Arc::new(metrics)),
    );
    let app = router(Arc::clone(&state));
    let (status, body, _) = call(&app, get("/metrics", None)).await;
    assert_eq!(status, StatusCode::OK);
    let labels = "{provider=\"fake-a\",az=\"az1\",requestor=\"zuul\\\"1\",result=\"error.quota\"}";
    assert!(
        body.contains(&format!("nodepool_launch_results_total{labels} 2\n")),
        "{body}"
    );
    assert!(body.contains(&format!(
        "nodepool_launch_results_seconds_total{labels} 1.5\n"
    )));
    assert!(body.contains("nodepool_provider_leaked_instances_total{provider=\"fake-a\"} 4\n"));
    assert!(body.contains("nodepool_provider_leaked_ports_total{provider=\"fake-a\"} 2\n"));
    assert!(
        body.contains("nodepool_provider_leaked_floatingips_total{provider=\"fake-a\"} 1\n"),
        "{body}"
    );
    assert!(
        body.contains("nodepool_image_validations_total{image=\"ubuntu\",result=\"failed\"} 3\n"),
        "{body}"
    );
    assert!(
        body.contains(
            "nodepool_image_validation_seconds_total{image=\"ubuntu\",result=\"failed\"} 4.5\n"
        ),
        "{body}"
    );
}

#[tokio::test]
async fn metrics_expose_the_cache_queues_and_the_zookeeper_requests_outstanding() {
    use nodepool_core::launcher::{CacheQueues, LauncherCacheQueues};
    let store = MemoryStore::new();
    let queues = LauncherCacheQueues {
        nodes: CacheQueues {
            events: 1,
            playback: 2,
        },
        requests: CacheQueues {
            events: 3,
            playback: 4,
        },
    };
    let metrics = Metrics::new().with_queues(Arc::new(move || queues), Some(Arc::new(|| 5)));
    let state = Arc::new(
        WebState::new(Arc::new(store.session()), config(), None).with_metrics(Arc::new(metrics)),
    );
    let app = router(Arc::clone(&state));
    let (status, body, _) = call(&app, get("/metrics", None)).await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        "nodepool_cache_event_queue{cache=\"node\"} 1\n",
        "nodepool_cache_playback_queue{cache=\"node\"} 2\n",
        "nodepool_cache_event_queue{cache=\"request\"} 3\n",
        "nodepool_cache_playback_queue{cache=\"request\"} 4\n",
        "nodepool_zk_connection_queue 5\n",
    ] {
        assert!(body.contains(line), "{line} in {body}");
    }
}

#[tokio::test]
async fn metrics_expose_what_drivers_record_under_their_own_names() {
    use nodepool_core::provider::DriverMetrics;
    let store = MemoryStore::new();
    let recorded = Arc::new(DriverMetrics::new());
    let name = "openstack.api.compute.GET.servers_detail.200";
    recorded.incr("127.0.0.1:8125", &name, 2);
    recorded.timing("127.0.0.1:8125", &name, 250);
    recorded.timing("127.0.0.1:8125", &name, 500);
    recorded.incr(
        "127.0.0.1:8125",
        &"openstack.api.compute.GET.servers_detail.attempted",
        2,
    );
    let metrics = Metrics::new().with_driver_metrics(recorded);
    let state = Arc::new(
        WebState::new(Arc::new(store.session()), config(), None).with_metrics(Arc::new(metrics)),
    );
    let app = router(Arc::clone(&state));
    let (status, body, _) = call(&app, get("/metrics", None)).await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        "nodepool_driver_metric_total{metric=\"openstack.api.compute.GET.servers_detail.200\"} 2\n",
        "nodepool_driver_metric_timings_total{metric=\"openstack.api.compute.GET.servers_detail.200\"} 2\n",
        "nodepool_driver_metric_seconds_total{metric=\"openstack.api.compute.GET.servers_detail.200\"} 0.75\n",
        "nodepool_driver_metric_total{metric=\"openstack.api.compute.GET.servers_detail.attempted\"} 2\n",
    ] {
        assert!(body.contains(line), "{line} in {body}");
    }
    assert!(
        !body.contains("timings_total{metric=\"openstack.api.compute.GET.servers_detail.attempted")
    );
}

fn post_json(path: &str, token: Option<&str>, body: &str) -> Request<Body> {
    let mut builder = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    builder.body(Body::from(body.to_owned())).expect("request")
}

#[tokio::test]
async fn writes_are_forbidden_without_a_configured_token() {
    let store = MemoryStore::new();
    let app = router(state_with(&store, None));
    let (status, body, _) = call(
        &app,
        post_json(
            "/api/v1/requests",
            Some("anything"),
            r#"{"labels": ["small"]}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("disabled"));
    assert!(store.list_requests().await.expect("list").is_empty());
}

#[tokio::test]
async fn writes_need_the_right_bearer_token() {
    let store = MemoryStore::new();
    let app = router(state_with(&store, Some(TOKEN)));
    for token in [None, Some("wrong")] {
        let (status, body, response) = call(
            &app,
            post_json("/api/v1/requests", token, r#"{"labels": ["small"]}"#),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert!(!body.contains(TOKEN));
    }
    assert!(store.list_requests().await.expect("list").is_empty());
}

#[tokio::test]
async fn submit_rejects_unknown_labels_and_bad_priority() {
    let store = MemoryStore::new();
    let app = router(state_with(&store, Some(TOKEN)));
    for body in [
        r#"{"labels": ["huge"]}"#,
        r#"{"labels": []}"#,
        r#"{"labels": ["small"], "priority": "1"}"#,
        r#"{"labels": "small"}"#,
    ] {
        let (status, _, _) = call(&app, post_json("/api/v1/requests", Some(TOKEN), body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
    assert!(store.list_requests().await.expect("list").is_empty());
}

/// Waits, with a deadline, until `check` holds for the JSON at `path`.
async fn wait_for(app: &Router, path: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let request = Request::get(path)
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .expect("request");
        let (status, body, _) = call(app, request).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let value: Value = serde_json::from_str(&body).expect("json");
        if check(&value) {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting on {path}: {value}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn request_is_fulfilled_shows_nodes_and_release_marks_node_used() {
    let store = MemoryStore::new();
    let app = router(state_with(&store, Some(TOKEN)));
    let (status, body, response) = call(
        &app,
        post_json(
            "/api/v1/requests",
            Some(TOKEN),
            r#"{"labels": ["small"], "priority": "100", "relative_priority": 0, "requestor": "me"}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = serde_json::from_str::<Value>(&body).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        response.headers()[header::LOCATION],
        format!("/api/v1/requests/{id}").as_str()
    );
    let path = format!("/api/v1/requests/{id}");
    let waiting = wait_for(&app, &path, |_| true).await;
    assert_eq!(waiting["state"], "requested");
    assert_eq!(waiting["requestor"], "me");

    // A launcher fulfils it: a ready node allocated to the request.
    let launcher = store.session();
    let mut node = Node::new(NodeState::Ready);
    node.labels = vec!["small".into()];
    node.interface_ip = Some("192.0.2.10".into());
    node.allocated_to = Some(id.clone());
    let node_id = launcher.create_node(&node).await.expect("node");
    let mut request = launcher
        .get_request(&id)
        .await
        .expect("read")
        .expect("request exists");
    request.nodes = vec![node_id.clone()];
    request.set_state(RequestState::Fulfilled);
    launcher.update_request(&request).await.expect("fulfil");

    let fulfilled = wait_for(&app, &path, |v| v["state"] == "fulfilled").await;
    assert_eq!(fulfilled["nodes"][0]["id"], node_id.as_str());
    assert_eq!(fulfilled["nodes"][0]["interface_ip"], "192.0.2.10");
    assert_eq!(fulfilled["nodes"][0]["state"], "in-use");
    let held = launcher
        .lock_contenders(&LockTarget::Node(node_id.clone()))
        .await
        .expect("contenders");
    assert_eq!(held, vec!["me".to_owned()]);

    let release = Request::post(format!("/api/v1/nodes/{node_id}/release"))
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .expect("request");
    let (status, body, _) = call(&app, release).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stored = launcher
        .get_node(&node_id)
        .await
        .expect("read")
        .expect("node exists");
    assert_eq!(stored.state, Some(NodeState::Used));
    let held = launcher
        .lock_contenders(&LockTarget::Node(node_id.clone()))
        .await
        .expect("contenders");
    assert!(held.is_empty());
    let released = wait_for(&app, &path, |_| true).await;
    assert_eq!(released["state"], "released");

    // A second release finds nothing to give back.
    let again = Request::post(format!("/api/v1/nodes/{node_id}/release"))
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .expect("request");
    let (status, _, _) = call(&app, again).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
