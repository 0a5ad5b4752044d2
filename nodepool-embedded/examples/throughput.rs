//! A quick measure of the embedded store: sequential and concurrent node
//! writes, updates, listings, and lock/unlock round trips, on a temporary
//! file.
//!
//! `cargo run -p nodepool-embedded --example throughput [nodes]`

use std::sync::Arc;
use std::time::Instant;

use nodepool_core::model::{Node, NodeState};
use nodepool_core::store::{LockOptions, LockTarget, NodeStore};
use nodepool_embedded::EmbeddedStore;

fn node(n: usize) -> Node {
    Node {
        state: Some(NodeState::Building),
        provider: Some("bench".to_string()),
        pool: Some("main".to_string()),
        labels: vec!["label-a".to_string()],
        external_id: Some(format!("server-{n}")),
        ..Node::default()
    }
}

fn rate(n: usize, started: Instant) -> String {
    let secs = started.elapsed().as_secs_f64();
    format!("{n} in {:.3} s = {:.0}/s", secs, n as f64 / secs)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path().join("bench.db"))?;

    let started = Instant::now();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(store.create_node(&node(i)).await?);
    }
    println!("create_node, sequential:   {}", rate(n, started));

    let started = Instant::now();
    for id in &ids {
        let mut stored = store.get_node(id).await?.ok_or("node vanished")?;
        stored.state = Some(NodeState::Ready);
        store.update_node(&stored).await?;
    }
    println!("get+update_node:           {}", rate(n, started));

    let shared: Arc<dyn NodeStore> = Arc::new(store.clone());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let store = Arc::clone(&shared);
        let per = n / 8;
        tasks.spawn(async move {
            for i in 0..per {
                store.create_node(&node(t * per + i)).await?;
            }
            Ok::<_, nodepool_core::Error>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    println!("create_node, 8 tasks:      {}", rate(n / 8 * 8, started));

    let rounds = 20;
    let started = Instant::now();
    let mut listed = 0;
    for _ in 0..rounds {
        listed = store.list_nodes().await?.len();
    }
    let per = started.elapsed().as_secs_f64() / f64::from(rounds);
    println!("list_nodes of {listed}:      {:.1} ms each", per * 1000.0);

    // Writes while another task lists in a loop: listings decode off the
    // worker thread, so writes are not held behind them.
    let lister = Arc::clone(&shared);
    let listing = tokio::spawn(async move {
        let mut listings = 0;
        for _ in 0..5 {
            lister.list_nodes().await?;
            listings += 1;
        }
        Ok::<_, nodepool_core::Error>(listings)
    });
    let started = Instant::now();
    let writes = n / 2;
    for i in 0..writes {
        store.create_node(&node(i)).await?;
    }
    println!("create_node while listing: {}", rate(writes, started));
    listing.await??;

    // The same rows without decoding, on a connection of its own.
    let raw = rusqlite::Connection::open(store.path())?;
    let started = Instant::now();
    let mut bytes = 0;
    for _ in 0..rounds {
        let mut stmt = raw.prepare_cached("SELECT id, data FROM nodes ORDER BY id")?;
        let rows = stmt.query_map([], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
        })?;
        bytes = 0;
        for row in rows {
            bytes += row?.1.len();
        }
    }
    let per = started.elapsed().as_secs_f64() / f64::from(rounds);
    println!("raw scan ({bytes} bytes):   {:.1} ms each", per * 1000.0);

    let target = LockTarget::Node(ids[0].clone());
    let started = Instant::now();
    for _ in 0..n {
        let handle = store.lock(&target, &LockOptions::try_once()).await?;
        store.unlock(&handle).await?;
    }
    println!("lock+unlock:               {}", rate(n, started));
    store.close().await?;
    Ok(())
}
