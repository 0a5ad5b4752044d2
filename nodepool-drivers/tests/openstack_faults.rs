//! Fault modes of the simulator and how the OpenStack provider reports
//! them: quota answers pause (QuotaExceeded), 5xx and dropped connections
//! are retryable, ERROR servers and slow boots fail the wait.

mod openstack_support;

use nodepool_core::ErrorKind;
use std::time::Duration;

use nodepool_core::provider::{InstanceState, Provider};
use nodepool_core::Error;
use nodepool_openstack_sim::{BootFault, FaultRule, Faults, SimConfig};
use openstack_support::{provider, sim, spec};

fn rule(path: &str, method: &str, status: Option<u16>) -> FaultRule {
    FaultRule {
        path: Some(path.to_string()),
        method: Some(method.to_string()),
        status,
        ..FaultRule::default()
    }
}

#[tokio::test]
async fn cloud_quota_refusal_is_quota_exceeded() {
    let sim = sim(SimConfig::default()).await;
    sim.state.update(|c| c.config.limits.max_instances = 0);
    let p = provider(&sim);
    match p.create_instance(&spec("small")).await {
        Err(Error::QuotaExceeded { provider, resource }) => {
            assert_eq!(provider, "sim");
            assert_eq!(resource, "instances");
        }
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
}

#[tokio::test]
async fn http_413_over_limit_is_quota_exceeded() {
    let sim = sim(SimConfig::default()).await;
    let mut r = rule("/compute/v2.1/servers", "POST", Some(413));
    r.message = Some("Maximum number of ports exceeded".to_string());
    sim.state.set_faults(Faults {
        rules: vec![r],
        ..Faults::default()
    });
    let err = provider(&sim)
        .create_instance(&spec("small"))
        .await
        .expect_err("413");
    assert!(matches!(err, Error::QuotaExceeded { .. }), "{err:?}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn server_error_500_is_a_retryable_cloud_error() {
    let sim = sim(SimConfig::default()).await;
    let mut r = rule("/compute/v2.1/servers", "POST", Some(500));
    r.times = Some(1);
    sim.state.set_faults(Faults {
        rules: vec![r],
        ..Faults::default()
    });
    let p = provider(&sim);
    let err = p.create_instance(&spec("small")).await.expect_err("500");
    assert!(
        matches!(
            err,
            Error::Cloud {
                kind: ErrorKind::Transient,
                ..
            }
        ),
        "{err:?}"
    );
    // The fault was for one request only: the retry succeeds.
    let inst = p
        .create_instance(&spec("small"))
        .await
        .expect("retry succeeds");
    p.delete_instance(&inst.external_id).await.expect("delete");
}

#[tokio::test]
async fn dropped_connection_is_a_retryable_cloud_error() {
    let sim = sim(SimConfig::default()).await;
    let p = provider(&sim);
    p.quota().await.expect("authenticated first");
    let mut r = rule("/compute/v2.1/limits", "GET", None);
    r.drop_connection = true;
    r.times = Some(1);
    sim.state.set_faults(Faults {
        rules: vec![r],
        ..Faults::default()
    });
    let err = p.quota().await.expect_err("dropped");
    assert!(
        matches!(
            err,
            Error::Cloud {
                kind: ErrorKind::Transient,
                ..
            }
        ),
        "{err:?}"
    );
    p.quota().await.expect("the next call is answered");
}

#[tokio::test]
async fn client_error_400_is_not_retryable() {
    let sim = sim(SimConfig::default()).await;
    let r = rule("/compute/v2.1/servers", "POST", Some(400));
    sim.state.set_faults(Faults {
        rules: vec![r],
        ..Faults::default()
    });
    let err = provider(&sim)
        .create_instance(&spec("small"))
        .await
        .expect_err("400");
    assert!(
        matches!(
            err,
            Error::Cloud {
                kind: ErrorKind::Permanent,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn server_in_error_state_fails_the_wait_with_the_fault_message() {
    let sim = sim(SimConfig::default()).await;
    sim.state.set_faults(Faults {
        boot_error: Some(BootFault {
            message: "No valid host was found.".to_string(),
            times: Some(1),
        }),
        ..Faults::default()
    });
    let p = provider(&sim);
    let inst = p.create_instance(&spec("small")).await.expect("create");
    let err = p
        .wait_active(&inst.external_id, Duration::from_secs(5))
        .await
        .expect_err("ERROR");
    assert!(
        err.to_string().contains("No valid host was found."),
        "{err}"
    );
    let got = p
        .get_instance(&inst.external_id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        got.state,
        Some(InstanceState::Error("No valid host was found.".to_string()))
    );
    p.delete_instance(&inst.external_id).await.expect("delete");
}

#[tokio::test]
async fn slow_boot_times_out_the_wait_and_stays_building() {
    let sim = sim(SimConfig::default()).await;
    sim.state.set_faults(Faults {
        boot_delay_secs: Some(30.0),
        ..Faults::default()
    });
    let p = provider(&sim);
    let inst = p.create_instance(&spec("small")).await.expect("create");
    let err = p
        .wait_active(&inst.external_id, Duration::from_millis(300))
        .await
        .expect_err("slow");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    let got = p
        .get_instance(&inst.external_id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.state, Some(InstanceState::Building));
    p.delete_instance(&inst.external_id).await.expect("delete");
    assert!(p
        .get_instance(&inst.external_id)
        .await
        .expect("get")
        .is_none());
}

#[tokio::test]
async fn server_in_error_for_volume_quota_is_quota_exceeded() {
    let sim = sim(SimConfig::default()).await;
    sim.state.set_faults(Faults {
        boot_error: Some(BootFault::volume_quota(Some(1))),
        ..Faults::default()
    });
    let p = provider(&sim);
    let inst = p.create_instance(&spec("bfv")).await.expect("create");
    match p
        .wait_active(&inst.external_id, Duration::from_secs(5))
        .await
    {
        Err(Error::QuotaExceeded { provider, resource }) => {
            assert_eq!(provider, "sim");
            assert_eq!(resource, "gigabytes");
        }
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    // The server is still there, in ERROR, for the engine to delete.
    let got = p
        .get_instance(&inst.external_id)
        .await
        .expect("get")
        .expect("exists");
    match got.state {
        Some(InstanceState::Error(fault)) => {
            assert!(fault.contains(&inst.external_id), "{fault}");
            assert!(fault.contains("exceeds allowed gigabytes quota"), "{fault}");
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
    p.delete_instance(&inst.external_id).await.expect("delete");
    // Only one server was to fail: the next one boots.
    let next = p.create_instance(&spec("bfv")).await.expect("create");
    p.wait_active(&next.external_id, Duration::from_secs(5))
        .await
        .expect("active");
    p.delete_instance(&next.external_id).await.expect("delete");
}

#[tokio::test]
async fn server_in_error_after_the_quota_recheck_is_quota_exceeded() {
    let sim = sim(SimConfig::default()).await;
    sim.state.set_faults(Faults {
        boot_error: Some(BootFault::recheck_quota("cores", None)),
        ..Faults::default()
    });
    let p = provider(&sim);
    let inst = p.create_instance(&spec("small")).await.expect("create");
    let err = p
        .wait_active(&inst.external_id, Duration::from_secs(5))
        .await
        .expect_err("ERROR");
    assert!(
        matches!(&err, Error::QuotaExceeded { resource, .. } if resource == "cores"),
        "{err:?}"
    );
    assert!(err.is_retryable());
    p.delete_instance(&inst.external_id).await.expect("delete");
}
