//! Node requests made through the HTTP API outlive the daemon: after a
//! kill -9 and a restart on the same state directory, `GET` still answers
//! for a request, it is fulfilled, and the nodes launched for it go to it.
//!
//! Run with `cargo test -p nodepool --test api_durable`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use support::{free_port, wait_for, Daemon, FakeConfig};

const TOKEN: &str = "example-token-change-me";

fn secure_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/secure.yaml")
}

/// `method path` with the API token and a JSON body; (status, body).
fn call(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, Value)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b)?;
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

#[test]
fn api_request_survives_kill_9_and_is_fulfilled_after_the_restart() {
    let port = free_port();
    // Boots take 4 s: the daemon is killed while the node is building.
    let config = FakeConfig {
        boot_delay: 4.0,
        ..FakeConfig::new(port)
    };
    let mut daemon = Daemon::prepare(&config.yaml(), port);
    daemon.secure = Some(secure_file());
    daemon.spawn();
    daemon.wait_ready();

    let (status, created) =
        call(port, "POST", "/api/v1/requests", r#"{"labels": ["small"]}"#).expect("submit");
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("an id").to_string();
    wait_for(
        "a node building for the request",
        Duration::from_secs(20),
        || {
            daemon
                .list()
                .iter()
                .any(|n| n["state"] == "building")
                .then_some(())
        },
    );

    daemon.kill9();
    daemon.spawn();
    daemon.wait_ready();

    // GET answers for the request after the restart, and it is fulfilled.
    let path = format!("/api/v1/requests/{id}");
    let shown = wait_for(
        "the request to be fulfilled",
        Duration::from_secs(60),
        || {
            let (status, body) = call(port, "GET", &path, "")?;
            assert_eq!(
                status,
                200,
                "GET {path} after the restart: {body}\n{}",
                daemon.logs()
            );
            (body["state"] == "fulfilled").then_some(body)
        },
    );
    let nodes = shown["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1, "{shown}");
    let node_id = nodes[0]["id"].as_str().expect("node id").to_string();
    // The request's node is held for it: in use, not an idle ready node.
    let listed = daemon.list();
    let node = listed
        .iter()
        .find(|n| n["id"] == node_id.as_str())
        .unwrap_or_else(|| panic!("node {node_id} listed: {listed:?}"));
    assert_eq!(node["state"], "in-use", "{node}");
    assert!(
        !listed.iter().any(|n| n["state"] == "ready"),
        "no node launched for it is left idle: {listed:?}"
    );

    // It is released as usual.
    let (status, released) = call(
        port,
        "POST",
        &format!("/api/v1/nodes/{node_id}/release"),
        "",
    )
    .expect("release");
    assert_eq!(status, 200, "{released}");
    daemon.sigterm();
}
