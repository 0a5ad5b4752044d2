//! Tests of the key-scan output parser and the TCP check.

use std::net::TcpListener;

use super::*;

#[test]
fn keyscan_output_loses_host_prefix_comments_and_duplicates() {
    let stdout = "# 127.0.0.1:2222 SSH-2.0-OpenSSH_9.2p1 Debian-2\n\
                  [127.0.0.1]:2222 ssh-rsa AAAAB3Nza\n\
                  [127.0.0.1]:2222 ssh-ed25519 AAAAC3Nza\n\
                  \n\
                  [127.0.0.1]:2222 ssh-rsa AAAAB3Nza\n\
                  garbage\n";
    assert_eq!(
        parse_keyscan_output(stdout),
        vec!["ssh-rsa AAAAB3Nza", "ssh-ed25519 AAAAC3Nza"]
    );
}

#[tokio::test]
async fn port_check_succeeds_on_a_listening_port_and_fails_on_a_closed_one() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let target = |port| ScanTarget {
        host: "127.0.0.1".to_string(),
        port,
        timeout: Duration::from_secs(1),
    };
    let scanner = SshKeyscan::default();
    scanner.check_port(&target(port)).await.expect("listening");

    // A port bound without listening refuses connections, and no other
    // process on the machine can take it meanwhile.
    let closed = tokio::net::TcpSocket::new_v4().expect("socket");
    closed.bind(([127, 0, 0, 1], 0).into()).expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    match scanner.check_port(&target(closed_port)).await {
        Err(ScanError::Unreachable { port: p, .. }) => assert_eq!(p, closed_port),
        other => panic!("expected unreachable, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_keyscan_program_is_a_spawn_error() {
    let scanner = SshKeyscan::new("/nonexistent/ssh-keyscan");
    let target = ScanTarget {
        host: "127.0.0.1".to_string(),
        port: 22,
        timeout: Duration::from_secs(1),
    };
    assert!(matches!(
        scanner.scan_host_keys(&target).await,
        Err(ScanError::Spawn { .. })
    ));
}
