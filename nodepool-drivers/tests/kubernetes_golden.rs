//! Golden cases made by upstream's own kubernetes and openshiftpods driver
//! code (`scripts/golden/k8s_nodes.py`, files in tests/golden/kubernetes):
//! for each case, the objects we create are the bodies upstream sends, the
//! node record round-trips byte for byte, and the node our provider makes
//! on the simulator has upstream's connection type, connection details
//! (same keys in the same order; host, token and CA are the simulator's),
//! interface_ip, external_id, cloud, python_path, shell_type and resources
//! (byte for byte, extra resources included).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use nodepool_core::config::load_str;
use nodepool_core::model::json::JsonValue;
use nodepool_core::model::Node;
use nodepool_core::provider::{LaunchSpec, Provider, Resources};
use nodepool_drivers::k8s::kubeconfig::Credentials;
use nodepool_drivers::k8s::{objects, Flavor, K8sConfig, K8sProvider, KubeClient, LabelType};
use nodepool_kube_sim::{Sim, SimOptions, Timing, CA_CERT_PEM};
use serde_json::{json, Value};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/kubernetes")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn cases() -> Vec<String> {
    serde_json::from_str(&read("manifest.json")).expect("manifest")
}

struct Case {
    name: String,
    config: K8sConfig,
    provider_view: nodepool_core::config::ProviderConfig,
    calls: Vec<Value>,
    node_bytes: Vec<u8>,
    node: Value,
    fake: Value,
}

fn case(name: &str) -> Case {
    let config = load_str(
        &format!("{name}.yaml"),
        &read(&format!("{name}.yaml")),
        &nodepool_drivers::registry::builtin(),
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    let provider_view = config.providers[0].clone();
    let typed = provider_view
        .driver_config_as::<K8sConfig>()
        .expect("k8s")
        .clone();
    let node_text = read(&format!("{name}.node.json"));
    Case {
        name: name.to_string(),
        config: typed,
        provider_view,
        calls: serde_json::from_str(&read(&format!("{name}.calls.json"))).expect("calls"),
        node: serde_json::from_str(&node_text).expect("node"),
        node_bytes: node_text.into_bytes(),
        fake: serde_json::from_str(&read(&format!("{name}.fake.json"))).expect("fake"),
    }
}

fn text(v: &Value) -> String {
    serde_json::to_string(v).expect("json")
}

#[test]
fn our_objects_are_the_bodies_upstream_sends() {
    for name in cases() {
        let c = case(&name);
        let pool = c.fake["pool"].as_str().expect("pool");
        let node_id = c.fake["node_id"].as_str().expect("node id");
        let label = c
            .config
            .label(pool, c.fake["label"].as_str().expect("label"))
            .expect("label in config");
        let labels = objects::node_labels(
            label,
            node_id,
            &c.config.name,
            pool,
            Some(&c.fake["request"]),
            &BTreeMap::new(),
        );
        let ours: Vec<Value> = match c.config.flavor {
            Flavor::Kubernetes => {
                let ns = format!("{pool}-{node_id}");
                let restricted = label.kind == LabelType::Pod;
                let mut calls = vec![
                    json!(["create_namespace", null, objects::namespace(&ns, &labels)]),
                    json!([
                        "create_namespaced_service_account",
                        ns,
                        objects::service_account()
                    ]),
                    json!(["create_namespaced_secret", ns, objects::token_secret()]),
                    json!(["create_namespaced_role", ns, objects::role(restricted)]),
                    json!([
                        "create_namespaced_role_binding",
                        ns,
                        objects::role_binding(&ns, restricted)
                    ]),
                ];
                if restricted {
                    calls.push(json!([
                        "create_namespaced_pod",
                        ns,
                        objects::pod(&label.name, label, &labels, false)
                    ]));
                }
                calls
            }
            Flavor::OpenshiftPods => vec![json!([
                "create_namespaced_pod",
                pool,
                objects::pod(&format!("{}-{node_id}", label.name), label, &labels, true)
            ])],
        };
        assert_eq!(ours.len(), c.calls.len(), "{name}: number of calls");
        for (ours, theirs) in ours.iter().zip(&c.calls) {
            assert_eq!(text(ours), text(theirs), "{name}: {}", theirs[0]);
        }
    }
}

#[test]
fn upstream_node_records_round_trip_byte_for_byte() {
    for name in cases() {
        let c = case(&name);
        let node = Node::from_json("0000000001", &c.node_bytes).expect("reads");
        assert!(node.connection_details.is_some(), "{name}: details read");
        assert_eq!(
            String::from_utf8(node.to_json()).expect("utf-8"),
            String::from_utf8(c.node_bytes.clone()).expect("utf-8"),
            "{}",
            c.name
        );
    }
}

#[tokio::test]
async fn our_nodes_have_upstreams_fields() {
    let sim = Sim::start(SimOptions {
        timing: Timing {
            pod_ready_delay: Duration::from_millis(50),
            pod_terminate_delay: Duration::from_millis(50),
        },
        ..SimOptions::default()
    })
    .await
    .expect("sim");
    let b64 = base64::engine::general_purpose::STANDARD;
    for name in cases() {
        let c = case(&name);
        let pool = c.fake["pool"].as_str().expect("pool").to_string();
        let label_name = c.fake["label"].as_str().expect("label").to_string();
        let node_id = c.fake["node_id"].as_str().expect("node id").to_string();
        let verify = c.fake["verify_ssl"].as_bool().expect("verify_ssl");
        let creds = Credentials {
            server: sim.url().to_string(),
            ca_pem: verify.then(|| CA_CERT_PEM.to_string()),
            insecure: !verify,
            token: Some(nodepool_core::Secret::new(sim.token())),
            client_pem: None,
            namespace: None,
        };
        let client = KubeClient::new(creds).expect("client");
        if c.config.flavor == Flavor::OpenshiftPods {
            let _ = client
                .create(
                    "/api/v1/namespaces",
                    &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": pool}}),
                )
                .await;
        }
        let provider = K8sProvider::new(Arc::new(c.config.clone()), client);
        let spec = LaunchSpec {
            node_id: node_id.clone(),
            pool: pool.clone(),
            label: label_name.clone(),
            hostname: format!("np{node_id}"),
            image: None,
            metadata: BTreeMap::new(),
            az: None,
            request: Some(c.fake["request"].clone()),
        };
        let created = provider
            .create_instance(&spec)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ready = provider
            .wait_active(&created.external_id, Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let up = &c.node;

        // Connection details: upstream's with the simulator's host, token
        // and CA.
        let mut expected = up["connection_port"].clone();
        let sim_token = match c.config.flavor {
            Flavor::Kubernetes => {
                let secret = sim
                    .get("secrets", &created.external_id, "zuul-worker")
                    .expect("token secret");
                if let Some(ca) = expected.get_mut("ca_crt") {
                    *ca = secret["data"]["ca.crt"].clone();
                }
                let token = b64
                    .decode(secret["data"]["token"].as_str().expect("token"))
                    .expect("base64");
                String::from_utf8(token).expect("utf-8")
            }
            Flavor::OpenshiftPods => {
                expected["ca_crt"] = json!(b64.encode(CA_CERT_PEM));
                sim.token().to_string()
            }
        };
        expected["host"] = json!(sim.url());
        expected["token"] = json!(sim_token);
        let details = Value::Object(
            ready
                .connection_details
                .clone()
                .expect("details")
                .to_serde(),
        );
        assert_eq!(text(&details), text(&expected), "{name}: connection_port");

        assert_eq!(
            ready.connection_type.as_deref(),
            up["connection_type"].as_str(),
            "{name}"
        );
        assert_eq!(
            ready.interface_ip.as_deref(),
            up["interface_ip"].as_str(),
            "{name}"
        );
        assert_eq!(
            Some(ready.external_id.as_str()),
            up["external_id"].as_str(),
            "{name}"
        );
        assert_eq!(
            ready.cloud.as_deref(),
            up["cloud"].as_str(),
            "{name}: cloud"
        );
        assert_eq!(
            ready.host_id.is_some(),
            up["host_id"].is_string(),
            "{name}: host_id"
        );

        let view = c.provider_view.pools[0]
            .labels
            .iter()
            .find(|l| l.name == label_name)
            .expect("label view");
        assert_eq!(
            view.python_path.as_deref(),
            up["python_path"].as_str(),
            "{name}"
        );
        assert_eq!(
            view.shell_type.as_deref(),
            up["shell_type"].as_str(),
            "{name}"
        );

        // Resources: what the node record says it uses, byte for byte as
        // upstream writes it (a GPU, ephemeral storage and extra-resources
        // after cores, instances and ram).
        let r = provider
            .label_resources(&pool, &label_name)
            .await
            .expect("resources");
        let theirs = Node::from_json(&node_id, &c.node_bytes)
            .expect("reads")
            .resources
            .expect("upstream's resources");
        assert_eq!(
            JsonValue::Object(r.to_node_json()).to_python_json(false),
            JsonValue::Object(theirs.clone()).to_python_json(false),
            "{name}: resources"
        );
        assert_eq!(Resources::from_node_json(&theirs), r, "{name}: read back");
        provider
            .delete_instance(&created.external_id)
            .await
            .expect("delete");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while provider
            .get_instance(&created.external_id)
            .await
            .expect("get")
            .is_some()
        {
            assert!(tokio::time::Instant::now() < deadline, "{name}: deleted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    sim.shutdown().await;
}
