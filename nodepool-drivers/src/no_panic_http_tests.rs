//! No panic on any cloud answer, end to end: each driver's provider talks
//! to a loopback HTTP server that answers every call with hostile bodies
//! (real-shaped answers made hostile in one place, or garbage of every
//! type under the keys the driver reads) and odd statuses. Every provider
//! verb is called many times; errors are expected, panics are not.
//!
//! The OpenStack server hands out a usable token (with odd times now and
//! then) so that calls reach Nova; statuses that make a client back off
//! and retry (5xx, throttling) are left out to keep the test quick.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nodepool_core::config::{load_str, Config};
use nodepool_core::provider::{ImageRef, LaunchSpec, Provider};
use nodepool_core::testing::fuzz::Fuzz;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::registry::builtin;

/// Calls of each provider verb per driver (Kubernetes fewer: its create
/// waits for objects that a hostile server never gives, up to the bound).
const ROUNDS: usize = 60;
const KUBE_ROUNDS: usize = 15;

/// An answer: status, content type, extra header lines, body.
type Answer = (u16, &'static str, String, String);

/// What the server answers to a request (its head and body as text).
type Script = Arc<dyn Fn(&str, &mut Fuzz) -> Answer + Send + Sync>;

/// Serve `script` on loopback; the base URL.
async fn serve(script: Script, seed: u64) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let fuzz = Arc::new(Mutex::new(Fuzz::new(seed)));
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let (script, fuzz) = (Arc::clone(&script), Arc::clone(&fuzz));
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 8192];
                // The head, then as much body as Content-Length says.
                loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let text = String::from_utf8_lossy(&request).to_string();
                let (status, kind, headers, body) = {
                    let mut fuzz = fuzz.lock().unwrap_or_else(|p| p.into_inner());
                    script(&text, &mut fuzz)
                };
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
                     Connection: close\r\n{headers}\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

fn status(fuzz: &mut Fuzz) -> u16 {
    *fuzz.pick(&[200, 200, 200, 200, 201, 202, 204, 400, 404, 409])
}

/// Call every verb of `provider` `ROUNDS` times; a panic fails the test.
async fn call_everything(
    name: &str,
    provider: Arc<dyn Provider>,
    pool: &str,
    label: &str,
    rounds: usize,
) {
    let mut panics = Vec::new();
    let mut answered = 0;
    for round in 0..rounds {
        let p = Arc::clone(&provider);
        let (pool, label) = (pool.to_string(), label.to_string());
        let calls = tokio::spawn(async move {
            let spec = LaunchSpec {
                node_id: format!("{round:010}"),
                pool: pool.clone(),
                label: label.clone(),
                hostname: format!("np{round:010}"),
                image: Some(ImageRef::Cloud("img".into())),
                metadata: Default::default(),
                az: None,
                request: Some(json!({"id": format!("100-{round:010}")})),
            };
            let limit = Duration::from_millis(500);
            // Each verb once, bounded in time: a hang is no panic. Counts
            // the calls that got an answer through the parsers.
            let mut answered = 0;
            macro_rules! bounded {
                ($call:expr) => {
                    if let Ok(Ok(_)) = tokio::time::timeout(limit, $call).await {
                        answered += 1;
                    }
                };
            }
            bounded!(p.label_resources(&pool, &label));
            bounded!(p.quota());
            bounded!(p.list_instances_page(None, 100));
            bounded!(p.get_instance("i-1"));
            bounded!(p.create_instance(&spec));
            bounded!(p.wait_active("i-1", Duration::from_millis(100)));
            bounded!(p.delete_instance("i-1"));
            bounded!(p.list_images());
            answered
        });
        match calls.await {
            Ok(n) => answered += n,
            Err(e) if e.is_panic() => panics.push(format!("round {round}: {e}")),
            Err(_) => {}
        }
    }
    assert!(
        panics.is_empty(),
        "{name}: {} of {rounds} rounds panicked:\n{}",
        panics.len(),
        panics.join("\n")
    );
    // Hostile, not hopeless: some answers parse, so the parsers past the
    // first check were run too.
    assert!(answered > 0, "{name}: no call got an answer through");
}

fn config(yaml: &str) -> Config {
    load_str("nodepool.yaml", yaml, &builtin()).unwrap_or_else(|e| panic!("config: {e}"))
}

const NOVA_KEYS: &[&str] = &[
    "servers",
    "server",
    "id",
    "name",
    "status",
    "addresses",
    "addr",
    "version",
    "metadata",
    "flavor",
    "flavors",
    "vcpus",
    "ram",
    "hostId",
    "image",
    "images",
    "fault",
    "message",
    "limits",
    "absolute",
    "maxTotalInstances",
    "maxTotalCores",
    "maxTotalRAMSize",
    "ports",
    "floatingips",
    "floating_ip_address",
    "servers_links",
    "href",
    "rel",
    "next",
];

fn nova_answer(fuzz: &mut Fuzz) -> Value {
    let server = json!({"id": "i-1", "name": "np1", "status": "ACTIVE", "hostId": "h",
        "flavor": {"vcpus": 2, "ram": 2048}, "image": {"id": "img"},
        "metadata": {"nodepool_provider_name": "os", "nodepool_node_id": "0000000001"},
        "addresses": {"public": [{"addr": "203.0.113.1", "version": 4}]}});
    let bases = [
        json!({"servers": [server.clone()], "servers_links": [{"rel": "next", "href": "x"}]}),
        json!({"server": server}),
        json!({"flavors": [{"id": "1", "name": "m1.small", "ram": 2048, "vcpus": 1}]}),
        json!({"limits": {"absolute": {"maxTotalInstances": 10, "maxTotalCores": 20,
                                        "maxTotalRAMSize": 51200}}}),
        json!({"images": [{"id": "img", "name": "cirros", "status": "active"}]}),
        json!({"ports": [], "floatingips": []}),
    ];
    let base = fuzz.pick(&bases).clone();
    if fuzz.one_in(4) {
        fuzz.garbage(NOVA_KEYS, 4)
    } else {
        fuzz.mutate(&base, NOVA_KEYS)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openstack_provider_never_panics_on_hostile_answers() {
    let base_cell: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
    let cell = Arc::clone(&base_cell);
    let script: Script = Arc::new(move |request, fuzz| {
        if request.contains("/auth/tokens") {
            let base = cell.lock().map(|b| b.clone()).unwrap_or_default();
            let endpoints: Vec<Value> = ["compute", "network", "image", "volumev3"]
                .iter()
                .map(|t| {
                    json!({"type": t, "endpoints": [
                    {"url": format!("{base}/{t}"), "interface": "public", "region_id": "r1"}]})
                })
                .collect();
            let mut token = json!({"token": {"expires_at": "2099-01-01T00:00:00.000000Z",
                                             "issued_at": "2026-01-01T00:00:00.000000Z",
                                             "catalog": endpoints}});
            if fuzz.one_in(3) {
                token["token"]["expires_at"] = fuzz.nan_ish_string();
                token["token"]["issued_at"] = fuzz.scalar();
            }
            return (
                201,
                "application/json",
                "X-Subject-Token: t\r\n".to_string(),
                token.to_string(),
            );
        }
        let body = nova_answer(fuzz).to_string();
        (status(fuzz), "application/json", String::new(), body)
    });
    let base = serve(script, 21).await;
    *base_cell.lock().expect("cell") = base.clone();
    let config = config(
        "labels:\n  - name: small\nproviders:\n  - name: os\n    driver: openstack\n    \
         cloud: fuzz\n    rate: 0\n    cloud-images:\n      - name: img\n        \
         image-name: cirros\n    pools:\n      - name: main\n        \
         availability-zones: [az1]\n        labels:\n          - name: small\n            \
         cloud-image: img\n            min-ram: 1024\n",
    );
    let typed = config.providers[0]
        .driver_config_as::<crate::openstack::OpenStackConfig>()
        .expect("openstack")
        .clone();
    let cloud = crate::openstack::clouds_yaml::CloudConfig {
        name: "fuzz".into(),
        region_name: Some("r1".into()),
        auth_url: format!("{base}/identity/v3"),
        credentials: crate::openstack::auth::Credentials::Password {
            username: Some("u".into()),
            user_id: None,
            password: crate::openstack::auth::Secret::new("p"),
            user_domain_name: Some("Default".into()),
            user_domain_id: None,
            project_name: Some("p".into()),
            project_id: None,
            project_domain_name: Some("Default".into()),
            project_domain_id: None,
        },
        interface: "public".into(),
        image_format: "qcow2".into(),
        private: false,
        floating_ips: true,
        verify: true,
        cacert: None,
        use_image_import: false,
        api_statsd: None,
    };
    let provider =
        crate::openstack::OpenStackProvider::connect(Arc::new(typed), cloud).expect("provider");
    call_everything("openstack", Arc::new(provider), "main", "small", ROUNDS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_provider_never_panics_on_hostile_answers() {
    let script: Script = Arc::new(|request, fuzz| {
        if request.to_ascii_lowercase().contains("x-amz-target") {
            let base = json!({"Quotas": [{"QuotaCode": "L-1216C47A", "Value": 100.0,
                "QuotaName": "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"}]});
            let body = fuzz
                .mutate(
                    &base,
                    &["Quotas", "QuotaCode", "Value", "QuotaName", "NextToken"],
                )
                .to_string();
            return (200, "application/x-amz-json-1.1", String::new(), body);
        }
        let items = [
            "<item><instanceId>i-1</instanceId><instanceState><code>16</code><name>running</name></instanceState><privateIpAddress>10.0.0.1</privateIpAddress><placement><availabilityZone>az</availabilityZone></placement><tagSet><item><key>nodepool_provider_name</key><value>ec2</value></item></tagSet></item>",
            "<item><instanceType>t3.small</instanceType><vCpuInfo><defaultVCpus>2</defaultVCpus><defaultCores>1</defaultCores></vCpuInfo><memoryInfo><sizeInMiB>2048</sizeInMiB></memoryInfo></item>",
        ];
        let mut item = fuzz.pick(&items).to_string();
        // One number or name made hostile.
        let hostile = match fuzz.scalar() {
            Value::String(s) => s.replace(['<', '&'], ""),
            other => other.to_string(),
        };
        for target in ["2048", "16", "running", "i-1", ">2<", "10.0.0.1"] {
            if fuzz.one_in(3) && item.contains(target) {
                let with = if target == ">2<" {
                    format!(">{hostile}<")
                } else {
                    hostile.clone()
                };
                item = item.replacen(target, &with, 1);
            }
        }
        let body = format!(
            "<Response><reservationSet><item><instancesSet>{item}</instancesSet></item></reservationSet>\
             <instanceTypeSet>{item}</instanceTypeSet><imagesSet>{item}</imagesSet>\
             <volumeSet>{item}</volumeSet><hostSet>{item}</hostSet></Response>"
        );
        let body = if fuzz.one_in(5) {
            body[..fuzz.below(body.len())].to_string()
        } else {
            body
        };
        (
            *fuzz.pick(&[200, 200, 200, 400]),
            "text/xml",
            String::new(),
            body,
        )
    });
    let base = serve(script, 23).await;
    let config = config(
        "labels:\n  - name: small\nproviders:\n  - name: ec2\n    driver: aws\n    \
         region-name: us-east-1\n    rate: 1000\n    cloud-images:\n      - name: img\n        \
         image-id: ami-1\n        username: u\n    pools:\n      - name: main\n        \
         labels:\n          - name: small\n            cloud-image: img\n            \
         instance-type: t3.small\n            key-name: k\n",
    );
    let typed = config.providers[0]
        .driver_config_as::<crate::aws::AwsConfig>()
        .expect("aws")
        .clone();
    let env = move |k: &str| match k {
        "AWS_ENDPOINT_URL" => Some(base.clone()),
        "AWS_ACCESS_KEY_ID" => Some("AKIDEXAMPLE".into()),
        "AWS_SECRET_ACCESS_KEY" => Some("secret".into()),
        _ => None,
    };
    let provider = crate::aws::AwsProvider::from_env(Arc::new(typed), &env).expect("provider");
    call_everything("aws", Arc::new(provider), "main", "small", ROUNDS).await;
}

const KUBE_KEYS: &[&str] = &[
    "items",
    "metadata",
    "name",
    "namespace",
    "labels",
    "resourceVersion",
    "status",
    "phase",
    "spec",
    "nodeName",
    "data",
    "token",
    "ca.crt",
    "deletionTimestamp",
    "code",
    "message",
    "reason",
    "type",
    "object",
    "secrets",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_provider_never_panics_on_hostile_answers() {
    let script: Script = Arc::new(|_request, fuzz| {
        let pod = json!({"metadata": {"name": "main-0000000001", "namespace": "main",
            "resourceVersion": "1", "labels": {"nodepool_provider_name": "kube",
            "nodepool_pool_name": "main", "nodepool_node_label": "pod"}},
            "spec": {"nodeName": "n1"}, "status": {"phase": "Running"},
            "data": {"token": "dG9rZW4=", "ca.crt": "Y2E="}});
        let bases = [
            json!({"items": [pod.clone()], "metadata": {"resourceVersion": "1"}}),
            pod,
            json!({"kind": "Status", "code": 409, "reason": "AlreadyExists", "message": "x"}),
        ];
        let base = fuzz.pick(&bases).clone();
        let body = if fuzz.one_in(4) {
            fuzz.garbage(KUBE_KEYS, 4)
        } else {
            fuzz.mutate(&base, KUBE_KEYS)
        };
        (
            status(fuzz),
            "application/json",
            String::new(),
            body.to_string(),
        )
    });
    let base = serve(script, 29).await;
    let config = config(
        "labels:\n  - name: pod\nproviders:\n  - name: kube\n    driver: kubernetes\n    \
         pools:\n      - name: main\n        labels:\n          - name: pod\n            \
         type: pod\n            image: fedora\n            cpu: 1\n            memory: 512\n",
    );
    let typed = config.providers[0]
        .driver_config_as::<crate::k8s::config::K8sConfig>()
        .expect("kubernetes")
        .clone();
    let creds = crate::k8s::kubeconfig::Credentials {
        server: base,
        ca_pem: None,
        insecure: false,
        token: Some(nodepool_core::secret::Secret::new("t")),
        client_pem: None,
        namespace: None,
    };
    let client = crate::k8s::client::KubeClient::new(creds).expect("client");
    let provider = crate::k8s::provider::K8sProvider::new(Arc::new(typed), client);
    call_everything("kubernetes", Arc::new(provider), "main", "pod", KUBE_ROUNDS).await;
}
