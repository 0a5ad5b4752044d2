//! Keystone authentication of the OpenStack provider: password and
//! application credentials, renewal before expiry and after a 401, and
//! secrets kept out of Debug output and error messages.

mod openstack_support;

use nodepool_core::provider::Provider;
use nodepool_core::Error;
use nodepool_core::ErrorKind;
use nodepool_drivers::openstack::auth::{Credentials, Secret};
use nodepool_openstack_sim::SimConfig;
use openstack_support::{password_cloud, provider, provider_with, sim, NODEPOOL_YAML};

#[tokio::test]
async fn application_credential_authenticates() {
    let sim = sim(SimConfig::default()).await;
    let mut cloud = password_cloud(&sim.base, "unused");
    cloud.credentials = Credentials::ApplicationCredential {
        id: Some("ac-nodepool".to_string()),
        name: None,
        secret: Secret::new("app-credential-secret"),
        username: None,
        user_id: None,
        user_domain_name: None,
        user_domain_id: None,
    };
    let p = provider_with(&sim, NODEPOOL_YAML, cloud);
    let quota = p
        .quota()
        .await
        .expect("quota with an application credential");
    assert_eq!(quota.instances, Some(20));
}

#[tokio::test]
async fn wrong_password_is_a_config_error_without_the_password() {
    let sim = sim(SimConfig::default()).await;
    let p = provider_with(
        &sim,
        NODEPOOL_YAML,
        password_cloud(&sim.base, "hunter2-wrong"),
    );
    let err = p.quota().await.expect_err("refused");
    assert!(
        matches!(
            err,
            Error::Cloud {
                kind: ErrorKind::Config,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.to_string().contains("hunter2-wrong"), "{err}");
    assert!(!format!("{err:?}").contains("hunter2-wrong"));
}

#[tokio::test]
async fn secrets_and_tokens_never_appear_in_debug_output() {
    let sim = sim(SimConfig::default()).await;
    let p = provider_with(
        &sim,
        NODEPOOL_YAML,
        password_cloud(&sim.base, "demo-password"),
    );
    p.quota().await.expect("authenticated");
    let tokens: Vec<String> = sim.state.read(|c| c.tokens.keys().cloned().collect());
    assert!(!tokens.is_empty());
    let debug = format!("{p:?}");
    assert!(!debug.contains("demo-password"), "password in {debug}");
    for t in tokens {
        assert!(!debug.contains(&t), "token in Debug output");
    }
    assert!(debug.contains("Secret(***)"));
    let secret = Secret::new("app-credential-secret");
    assert_eq!(format!("{secret:?}"), "Secret(***)");
}

#[tokio::test]
async fn token_is_renewed_before_it_expires() {
    let sim = sim(SimConfig {
        token_ttl_secs: 1.0,
        ..SimConfig::default()
    })
    .await;
    let p = provider(&sim);
    p.quota().await.expect("first call");
    assert_eq!(sim.state.read(|c| c.tokens_issued), 1);
    tokio::time::sleep(std::time::Duration::from_millis(900)).await;
    p.quota().await.expect("call near expiry");
    assert_eq!(
        sim.state.read(|c| c.tokens_issued),
        2,
        "a new token near expiry"
    );
}

#[tokio::test]
async fn refused_token_is_renewed_once_and_the_call_retried() {
    let sim = sim(SimConfig::default()).await;
    let p = provider(&sim);
    p.quota().await.expect("first call");
    sim.state.update(|c| c.tokens.clear());
    p.quota().await.expect("call after the token was revoked");
    assert_eq!(sim.state.read(|c| c.tokens_issued), 2);
}
