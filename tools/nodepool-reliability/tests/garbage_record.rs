//! One garbage record in ZooKeeper (a node and a node request whose data is
//! not JSON, written around the store) must not stop the launcher: it
//! keeps fulfilling other requests. Needs `NODEPOOL_TEST_ZK_TLS`.

use std::sync::Arc;
use std::time::Duration;

use nodepool_core::client::{Client, RequestOptions};
use nodepool_core::config::{load_str, DriverRegistry};
use nodepool_core::launcher::{Launcher, LauncherSettings};
use nodepool_core::scheduler::DefaultScheduler;
use nodepool_core::store::NodeStore;
use nodepool_zk::{ZkConfig, ZkStore, ZkTls};
use tokio_util::sync::CancellationToken;
use zookeeper_client::{Acls, CreateMode, TlsOptions};

const CONFIG: &str = r#"
labels:
  - name: small
providers:
  - name: fake-provider
    driver: fake
    cloud: fake
    cloud-images:
      - name: Fake Precise
    pools:
      - name: main
        max-servers: 5
        labels:
          - name: small
            cloud-image: Fake Precise
            min-ram: 8192
"#;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn launcher_keeps_fulfilling_requests_beside_garbage_znodes() {
    let hosts = env("NODEPOOL_TEST_ZK_TLS");
    if hosts.is_empty() {
        eprintln!("NODEPOOL_TEST_ZK_TLS is not set: skipped");
        return;
    }
    let chroot = format!("/garbage-{}", uuid::Uuid::new_v4().simple());
    let tls = ZkTls {
        ca: env("NODEPOOL_TEST_ZK_CA").into(),
        cert: env("NODEPOOL_TEST_ZK_CERT").into(),
        key: env("NODEPOOL_TEST_ZK_KEY").into(),
    };
    let store: Arc<dyn NodeStore> = Arc::new(
        ZkStore::connect(
            ZkConfig::new([hosts.clone()])
                .with_chroot(chroot.clone())
                .with_tls(tls.clone()),
        )
        .await
        .expect("store connects"),
    );

    // Garbage written around the store, as a broken tool would.
    let read = |p: &std::path::Path| std::fs::read_to_string(p).expect("TLS file");
    let options = TlsOptions::new()
        .with_pem_ca(&read(&tls.ca))
        .expect("CA")
        .with_pem_identity(&read(&tls.cert), &read(&tls.key))
        .expect("identity");
    let raw = zookeeper_client::Client::connector()
        .with_tls(options)
        .secure_connect(&hosts)
        .await
        .expect("raw client connects");
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    for (path, data) in [
        ("nodepool/nodes/0000099999", &b"\xff{not json"[..]),
        ("nodepool/requests/100-0000099998", &b"[1, 2"[..]),
        ("nodepool/nodes/0000099997", &b"{\"state\": 42}"[..]),
    ] {
        raw.create(&format!("{chroot}/{path}"), data, &persistent)
            .await
            .unwrap_or_else(|e| panic!("create {path}: {e}"));
    }

    let mut reg = DriverRegistry::new();
    nodepool_drivers::register_builtin(&mut reg);
    let config = load_str("nodepool.yaml", CONFIG, &reg).expect("config");
    let provider = reg
        .get("fake")
        .expect("fake driver")
        .create_provider(&config.providers[0])
        .expect("provider");
    let providers = [("fake-provider".to_string(), provider)]
        .into_iter()
        .collect();
    let launcher = Launcher::new(
        LauncherSettings::new("garbage-test"),
        Arc::clone(&store),
        Arc::new(DefaultScheduler),
        config,
        providers,
    );
    let cancel = CancellationToken::new();
    let run = {
        let cancel = cancel.clone();
        tokio::spawn(async move { launcher.run(cancel).await })
    };

    let client = Client::new(Arc::clone(&store), "garbage-test");
    let mut fulfilled = 0;
    for _ in 0..5 {
        let request = client
            .submit(&["small"], &RequestOptions::default())
            .await
            .expect("submit");
        let nodes = client
            .wait_fulfilled(&request, Duration::from_secs(60))
            .await
            .expect("fulfilled beside garbage records");
        fulfilled += nodes.nodes().count();
        client.release(nodes).await.expect("release");
    }
    assert_eq!(fulfilled, 5);
    assert!(!run.is_finished(), "the launcher is still running");
    // The garbage is left for an operator, not silently dropped.
    let still = raw
        .get_data(&format!("{chroot}/nodepool/nodes/0000099999"))
        .await
        .map(|(d, _)| d);
    assert_eq!(still.ok().as_deref(), Some(&b"\xff{not json"[..]));
    cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), run).await;
    let _ = store.close().await;
}
