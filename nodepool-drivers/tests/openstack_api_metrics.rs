//! openstacksdk's per-REST-call statsd metrics, differentially: the real
//! SDK's `Proxy._report_stats_statsd` (with its `_extract_name` and
//! `normalize_metric_name`), run in upstream's venv, against ours
//! ([`call_events`] and what the client records), on every URL the driver
//! calls in a scripted session against the OpenStack simulator and on URL
//! shapes the simulator does not produce (a project id in the path,
//! `AUTH_`, `.json`, `tokens`, a bare endpoint, the shapes the SDK raises
//! on); and the SDK's config loader against ours on where the metrics go
//! (`clouds.yaml`'s `metrics: statsd:` and `STATSD_*`).
//!
//! Needs `NODEPOOL_TEST_UPSTREAM_PYTHON` (the python of a venv with
//! `nodepool==11.0.0`, which brings openstacksdk; scripts/test.sh sets it);
//! without it the test prints SKIP and passes.

mod openstack_support;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nodepool_core::builder::upload::upload_metadata;
use nodepool_core::config::{load_str, DriverRegistry};
use nodepool_core::provider::{DriverMetrics, ImageUploadSpec, Provider};
use nodepool_drivers::openstack::api_metrics::{call_events, ApiEvent, ApiStatsd};
use nodepool_drivers::openstack::{register, OpenStackProvider};
use nodepool_openstack_sim::config::{FaultRule, Faults};
use nodepool_openstack_sim::state::{FloatingIp, Port};
use nodepool_openstack_sim::{SimConfig, SimVolumeLimits};
use openstack_support::{openstack_config, password_cloud, sim, spec};
use serde_json::{json, Value};

const PREFIX: &str = "openstack.api";
/// The simulator's project (its default user's).
const PROJECT: &str = "p-demo";

const YAML: &str = r##"
labels:
  - name: small
  - name: bfv
diskimages:
  - name: ubuntu
providers:
  - name: sim
    driver: openstack
    cloud: sim
    rate: 0
    boot-timeout: 10
    image-upload-timeout: 10
    port-cleanup-interval: 1
    clean-floating-ips: true
    cloud-images:
      - name: cirros
    diskimages:
      - name: ubuntu
    pools:
      - name: main
        networks: [private]
        labels:
          - name: small
            cloud-image: cirros
            flavor-name: m1.tiny
            console-log: true
          - name: bfv
            cloud-image: cirros
            flavor-name: m1.tiny
            boot-from-volume: true
            volume-size: 1
"##;

/// Reads JSON lines `{prefix, service, method, url, project_id, status,
/// elapsed_ms}` (`status` null: the call raised) and prints, per line, the
/// events openstacksdk 4's `Proxy._report_stats_statsd` sends, through a
/// recording statsd client: `[["ms", name, value] | ["c", name, n], ...]`.
const SDK_SCRIPT: &str = r#"
import datetime, json, logging, sys, warnings
warnings.simplefilter("ignore")
from openstack import proxy

class Pipe:
    def __init__(self, out): self.out = out
    def __enter__(self): return self
    def __exit__(self, *exc): return False
    def timing(self, name, value): self.out.append(["ms", name, value])
    def incr(self, name, count=1): self.out.append(["c", name, count])

class Client:
    def __init__(self): self.out = []
    def pipeline(self): return Pipe(self.out)

class Session:
    def __init__(self, project_id): self.project_id = project_id
    def get_project_id(self): return self.project_id

class Request:
    def __init__(self, url, method): self.url, self.method = url, method

class Response:
    def __init__(self, url, method, status, elapsed_ms):
        self.request = Request(url, method)
        self.status_code = status
        self.elapsed = datetime.timedelta(milliseconds=elapsed_ms)

for line in sys.stdin:
    case = json.loads(line)
    p = proxy.Proxy.__new__(proxy.Proxy)
    p._statsd_prefix = case["prefix"]
    p._statsd_client = Client()
    p.service_type = case["service"]
    p.session = Session(case["project_id"])
    p.log = logging.getLogger("sdk")
    if case["status"] is None:
        p._report_stats_statsd(None, case["url"], case["method"], Exception("no answer"))
    else:
        response = Response(case["url"], case["method"], case["status"], case["elapsed_ms"])
        p._report_stats_statsd(response)
    print(json.dumps(p._statsd_client.out))
"#;

/// One call to put to both sides.
#[derive(Debug, Clone)]
struct Case {
    service: String,
    method: String,
    url: String,
    project_id: Option<String>,
    /// Status and elapsed milliseconds, `None` for no answer.
    answer: Option<(u16, u64)>,
}

impl Case {
    fn answered(service: &str, method: &str, url: &str, status: u16, millis: u64) -> Self {
        Self {
            service: service.into(),
            method: method.into(),
            url: url.into(),
            project_id: Some(PROJECT.into()),
            answer: Some((status, millis)),
        }
    }

    fn ours(&self) -> Vec<ApiEvent> {
        call_events(
            PREFIX,
            &self.service,
            &self.method,
            &self.url,
            self.project_id.as_deref(),
            self.answer
                .map(|(status, ms)| (status, Duration::from_millis(ms))),
        )
    }
}

/// The SDK's events of each case.
fn sdk_events(python: &str, cases: &[Case]) -> Vec<Vec<ApiEvent>> {
    let mut child = Command::new(python)
        .args(["-c", SDK_SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    let mut input = String::new();
    for case in cases {
        let line = json!({
            "prefix": PREFIX,
            "service": case.service,
            "method": case.method,
            "url": case.url,
            "project_id": case.project_id,
            "status": case.answer.map(|a| a.0),
            "elapsed_ms": case.answer.map(|a| a.1),
        });
        input.push_str(&line.to_string());
        input.push('\n');
    }
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        stdin.write_all(input.as_bytes()).expect("write cases");
    });
    let out = child.wait_with_output().expect("the SDK script");
    writer.join().expect("writer");
    assert!(
        out.status.success(),
        "the SDK script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let answers: Vec<Vec<ApiEvent>> = text
        .lines()
        .map(|line| {
            let events: Vec<Value> = serde_json::from_str(line).expect("JSON events");
            events
                .iter()
                .map(|e| match (e[0].as_str(), e[1].as_str(), e[2].as_u64()) {
                    (Some("ms"), Some(name), Some(v)) => ApiEvent::Timing(name.into(), v),
                    (Some("c"), Some(name), Some(1)) => ApiEvent::Incr(name.into()),
                    _ => panic!("an event the test does not know: {e}"),
                })
                .collect()
        })
        .collect();
    assert_eq!(answers.len(), cases.len(), "one answer per case");
    answers
}

/// Both sides agree on every case.
fn assert_same_events(python: &str, cases: &[Case]) {
    let theirs = sdk_events(python, cases);
    for (case, sdk) in cases.iter().zip(theirs) {
        assert_eq!(case.ours(), sdk, "{case:?}");
    }
}

/// openstacksdk's service type of a simulator path, `None` for Keystone.
fn service_of(path: &str) -> Option<&'static str> {
    let first = path.trim_start_matches('/').split('/').next()?;
    match first {
        "compute" => Some("compute"),
        "image" => Some("image"),
        "network" => Some("network"),
        "volume" => Some("block-storage"),
        _ => None,
    }
}

fn upload_spec(path: std::path::PathBuf) -> ImageUploadSpec {
    let mut reg = DriverRegistry::new();
    register(&mut reg);
    let config = load_str("nodepool.yaml", YAML, &reg).unwrap_or_else(|e| panic!("config: {e}"));
    let image = &config.providers[0].diskimages[0];
    ImageUploadSpec {
        diskimage: "ubuntu".to_string(),
        build_id: "b1".to_string(),
        upload_id: "0000000001".to_string(),
        external_name: "ubuntu-1700000000".to_string(),
        path,
        format: "qcow2".to_string(),
        metadata: upload_metadata(config.diskimage("ubuntu"), image, "b1", "0000000001"),
    }
}

/// Every call the driver makes, through the provider, recorded.
async fn scripted_session(p: &OpenStackProvider, sim: &openstack_support::Sim) {
    p.label_resources("main", "small").await.expect("flavors");
    let small = p.create_instance(&spec("small")).await.expect("create");
    p.wait_active(&small.external_id, Duration::from_secs(10))
        .await
        .expect("active, with a floating IP");
    let bfv = p.create_instance(&spec("bfv")).await.expect("create bfv");
    p.wait_active(&bfv.external_id, Duration::from_secs(10))
        .await
        .expect("bfv active");
    p.list_instances_page(None, 200).await.expect("list");
    p.quota().await.expect("quota");
    p.console_log("main", "small", &small.external_id)
        .await
        .expect("console");
    assert!(p
        .get_instance("no-such-server")
        .await
        .expect("404")
        .is_none());
    p.delete_instance(&small.external_id).await.expect("delete");
    p.delete_instance(&bfv.external_id)
        .await
        .expect("delete bfv");

    let dir = std::env::temp_dir().join(format!("np-api-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("ubuntu-0000000001.qcow2");
    std::fs::write(&file, vec![3u8; 4096]).expect("image");
    let image = p.upload_image(&upload_spec(file)).await.expect("upload");
    p.list_images().await.expect("images");
    p.delete_image(&image).await.expect("delete image");
    let _ = std::fs::remove_dir_all(&dir);

    // Leaked resources: a DOWN port (deleted on the second look, past
    // `port-cleanup-interval`) and an unattached floating IP.
    sim.state.update(|c| {
        let port = Port {
            id: "leaked-port".into(),
            network_id: "net-private".into(),
            device_id: String::new(),
            device_owner: String::new(),
            status: "DOWN".into(),
            ip: "10.0.0.250".into(),
            mac: "fa:16:3e:00:00:09".into(),
        };
        c.ports.insert(port.id.clone(), port);
        let fip = FloatingIp {
            id: "leaked-fip".into(),
            address: "203.0.113.99".into(),
            network_id: "net-public".into(),
            port_id: None,
            status: "DOWN".into(),
        };
        c.floating_ips.insert(fip.id.clone(), fip);
    });
    p.cleanup_leaked_resources().await.expect("first look");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let cleaned = p.cleanup_leaked_resources().await.expect("second look");
    assert_eq!(cleaned.count("ports"), 1);
}

/// Prints, for each JSON line `{cloud, env}`, openstacksdk's statsd
/// target and prefix of that cloud under that environment, loading
/// clouds.yaml and secure.yaml from the directory in `argv[1]`.
const SDK_CONFIG_SCRIPT: &str = r#"
import json, os, sys, warnings
warnings.simplefilter("ignore")
from openstack.config import loader
d = sys.argv[1]
for line in sys.stdin:
    case = json.loads(line)
    for k in ("STATSD_HOST", "STATSD_PORT", "STATSD_PREFIX"):
        os.environ.pop(k, None)
    os.environ.update(case["env"])
    config = loader.OpenStackConfig(
        config_files=[d + "/clouds.yaml"], secure_files=[d + "/secure.yaml"], vendor_files=[])
    region = config.get_one(case["cloud"])
    client = region.get_statsd_client()
    target = None if client is None else "%s:%d" % client._addr
    print(json.dumps([target, region.get_statsd_prefix()]))
"#;

/// Where the SDK and we send a cloud's per-call metrics, for clouds.yaml
/// (top-level and per-cloud `metrics: statsd:`, a secure file) and the
/// environment.
#[test]
fn statsd_settings_are_openstacksdks() {
    let Some(python) = std::env::var("NODEPOOL_TEST_UPSTREAM_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
    else {
        println!("SKIP: NODEPOOL_TEST_UPSTREAM_PYTHON is not set");
        return;
    };
    let dir = std::env::temp_dir().join(format!("np-sdk-statsd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cloud = |name: &str, extra: &str| {
        format!(
            "  {name}:\n{extra}    auth:\n      auth_url: http://127.0.0.1:5000/v3\n      \
             username: demo\n      password: p\n      project_name: demo\n"
        )
    };
    // Addresses, not names: the SDK resolves the host when it loads.
    let clouds = format!(
        "metrics:\n  statsd:\n    host: 127.0.0.2\nclouds:\n{}{}{}",
        cloud("plain", ""),
        cloud(
            "prefixed",
            "    metrics:\n      statsd:\n        prefix: sdk.own\n"
        ),
        cloud(
            "elsewhere",
            "    metrics:\n      statsd:\n        host: 127.0.0.3\n        port: 7125\n"
        ),
    );
    std::fs::write(dir.join("clouds.yaml"), clouds).expect("clouds.yaml");
    std::fs::write(
        dir.join("secure.yaml"),
        "metrics:\n  statsd:\n    port: 9125\n",
    )
    .expect("secure.yaml");
    let envs: [&[(&str, &str)]; 5] = [
        &[],
        &[("STATSD_PREFIX", "env")],
        &[("STATSD_HOST", "127.0.0.1"), ("STATSD_PREFIX", "env")],
        &[("STATSD_PORT", "7")],
        &[("STATSD_HOST", ""), ("STATSD_PREFIX", "")],
    ];
    let mut cases = Vec::new();
    for name in ["plain", "prefixed", "elsewhere"] {
        for env in envs {
            cases.push((name, env));
        }
    }
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(SDK_CONFIG_SCRIPT)
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the SDK config script");
    let input: String = cases
        .iter()
        .map(|(name, env)| {
            let env: BTreeMap<&str, &str> = env.iter().copied().collect();
            format!("{}\n", json!({"cloud": name, "env": env}))
        })
        .collect();
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<(Option<String>, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(answers.len(), cases.len());
    let file = dir.join("clouds.yaml").display().to_string();
    for ((name, vars), (target, prefix)) in cases.iter().zip(answers) {
        let env = |k: &str| {
            if k == "OS_CLIENT_CONFIG_FILE" {
                return Some(file.clone());
            }
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let ours = nodepool_drivers::openstack::clouds_yaml::load_cloud(name, None, &env, &dir)
            .expect("cloud")
            .api_statsd;
        let sdk = target.map(|target| ApiStatsd { target, prefix });
        assert_eq!(ours, sdk, "cloud {name}, environment {vars:?}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_per_call_metrics_are_openstacksdks_for_every_call_the_driver_makes() {
    let Some(python) = std::env::var("NODEPOOL_TEST_UPSTREAM_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
    else {
        println!(
            "SKIP: NODEPOOL_TEST_UPSTREAM_PYTHON is not set (the python of a venv with \
             `pip install nodepool==11.0.0`, which brings openstacksdk)"
        );
        return;
    };

    // URL shapes the simulator does not produce.
    let mut shapes = Vec::new();
    for (service, method, url, status, ms) in [
        (
            "compute",
            "GET",
            "https://nova.example.org/v2.1/p-demo/servers/detail?limit=2",
            200,
            3,
        ),
        (
            "compute",
            "GET",
            "https://nova.example.org/v2.1/p-demo/servers/abc",
            404,
            1001,
        ),
        (
            "compute",
            "POST",
            "https://nova.example.org/v2.1/servers/abc/action",
            202,
            1000,
        ),
        (
            "network",
            "GET",
            "https://neutron.example.org:9696/v2.0/ports.json",
            200,
            1,
        ),
        (
            "network",
            "DELETE",
            "https://neutron.example.org:9696/v2.0/floatingips/x",
            204,
            0,
        ),
        (
            "image",
            "PUT",
            "https://glance.example.org/v2/images/x/file",
            204,
            5000,
        ),
        ("image", "GET", "https://glance.example.org/", 300, 2),
        (
            "object-store",
            "GET",
            "https://swift.example.org/v1/AUTH_p-demo/c/o",
            200,
            2,
        ),
        (
            "identity",
            "POST",
            "https://keystone.example.org/v3/auth/tokens",
            201,
            2,
        ),
        (
            "block-storage",
            "GET",
            "https://cinder.example.org/v3/p-demo",
            200,
            2,
        ),
        (
            "compute",
            "GET",
            "https://nova.example.org/v/servers",
            200,
            2,
        ),
        (
            "compute",
            "GET",
            "https://nova.example.org/s/x;p?q#f",
            200,
            2,
        ),
        (
            "compute",
            "GET",
            "https://nova.example.org/os-hypervisors/a.b:c/this/is",
            200,
            2,
        ),
    ] {
        shapes.push(Case::answered(service, method, url, status, ms));
    }
    for (service, method, path) in [
        ("compute", "GET", "/servers/abc"),
        ("network", "GET", "/networks?router:external=true"),
        (
            "image",
            "GET",
            "http://h/image/v2/images?limit=100&marker=x",
        ),
    ] {
        shapes.push(Case {
            service: service.into(),
            method: method.into(),
            url: path.into(),
            project_id: Some(PROJECT.into()),
            answer: None,
        });
    }
    // Times around the SDK's float truncation and its `> 1000`.
    for ms in [999, 1001, 1002, 1003, 1004, 1005, 2001, 4097, 65_537] {
        shapes.push(Case::answered(
            "compute",
            "GET",
            "https://h/v2.1/servers",
            200,
            ms,
        ));
    }
    let mut unscoped = Case::answered("compute", "GET", "https://h/v2.1/p-demo/servers", 200, 1);
    unscoped.project_id = None;
    shapes.push(unscoped);
    assert_same_events(&python, &shapes);

    // A scripted session on the simulator, with a dropped connection and a
    // slow answer.
    let sim = sim(SimConfig {
        boot_delay_secs: 0.05,
        volume_limits: Some(SimVolumeLimits {
            max_volumes: 10,
            max_gigabytes: 100,
        }),
        ..SimConfig::default()
    })
    .await;
    sim.state.set_faults(Faults {
        rules: vec![
            FaultRule {
                method: Some("GET".into()),
                path: Some("/compute/v2.1/limits".into()),
                drop_connection: true,
                times: Some(1),
                ..FaultRule::default()
            },
            FaultRule {
                method: Some("GET".into()),
                path: Some("/compute/v2.1/servers/detail".into()),
                delay_ms: Some(1100),
                times: Some(1),
                ..FaultRule::default()
            },
        ],
        ..Faults::default()
    });
    let metrics = Arc::new(DriverMetrics::new());
    let mut cloud = password_cloud(&sim.base, "demo-password");
    cloud.api_statsd = Some(ApiStatsd {
        target: "127.0.0.1:8125".into(),
        prefix: PREFIX.into(),
    });
    let p = OpenStackProvider::connect_reporting(
        openstack_config(YAML),
        cloud,
        Some(Arc::clone(&metrics)),
    )
    .expect("provider");
    // The dropped connection: a quota read with no answer.
    assert!(p.quota().await.is_err(), "the first /limits is dropped");
    scripted_session(&p, &sim).await;

    // The simulator's log: every call that reached it. Each answered one
    // goes to the SDK with its full URL; the dropped one with the path the
    // client was given, as the SDK names a call that raised.
    let log = sim.state.request_log();
    let mut dropped = false;
    let mut cases = Vec::new();
    for (method, path, _) in &log {
        let Some(service) = service_of(path) else {
            continue;
        };
        if !dropped && method == "GET" && path == "/compute/v2.1/limits" {
            dropped = true;
            cases.push(Case {
                service: service.into(),
                method: method.clone(),
                url: "/limits".into(),
                project_id: Some(PROJECT.into()),
                answer: None,
            });
            continue;
        }
        cases.push(Case::answered(
            service,
            method,
            &format!("{}{path}", sim.base),
            200,
            1,
        ));
    }
    assert!(dropped && cases.len() > 30, "{log:#?}");
    assert_same_events(&python, &cases);
    println!(
        "{} calls of the driver and {} URL shapes agree with openstacksdk",
        cases.len(),
        shapes.len()
    );

    // What the client recorded is the SDK's, call for call: the SDK's
    // `.attempted` (and `.failed`) names of the logged calls, counted,
    // are ours.
    let counted = |events: &[ApiEvent], out: &mut BTreeMap<String, u64>| {
        for e in events {
            if let ApiEvent::Incr(name) = e {
                if name.ends_with(".attempted") || name.ends_with(".failed") {
                    *out.entry(name.clone()).or_default() += 1;
                }
            }
        }
    };
    let mut sdk = BTreeMap::new();
    for events in sdk_events(&python, &cases) {
        counted(&events, &mut sdk);
    }
    let recorded: BTreeMap<String, u64> = metrics
        .snapshot()
        .into_iter()
        .inspect(|s| assert_eq!(s.target, "127.0.0.1:8125"))
        .filter(|s| s.name.ends_with(".attempted") || s.name.ends_with(".failed"))
        .map(|s| (s.name, s.totals.count))
        .collect();
    assert_eq!(recorded, sdk);
    for (name, count) in &recorded {
        println!("{count:4} {name}");
    }

    // And the statuses and times the simulator answered with.
    let names: BTreeMap<String, (u64, u64)> = metrics
        .snapshot()
        .into_iter()
        .map(|s| (s.name, (s.totals.count, s.totals.timings)))
        .collect();
    for name in [
        "openstack.api.compute.GET.limits.failed",
        "openstack.api.compute.POST.compute_servers.202",
        "openstack.api.compute.GET.compute_server.404",
        "openstack.api.compute.GET.servers_detail.over_1000",
        "openstack.api.network.DELETE.network_port.204",
        "openstack.api.block-storage.GET.volume_limits.200",
    ] {
        assert!(names.contains_key(name), "{name} in {names:#?}");
    }
    let (count, timings) = names["openstack.api.compute.GET.servers_detail.200"];
    assert_eq!(count, timings, "a counter and a timing per answer");
    assert_eq!(metrics.dropped(), 0);
}
