//! What the scheduler and the kubelet would do to a pod: defaults and
//! validation at creation, and its status in each phase.

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::meta;

/// The node every pod runs on.
pub const NODE_NAME: &str = "kube-sim-node";
/// The node's address.
pub const HOST_IP: &str = "10.0.0.2";

/// Check the containers and fill in the defaults the API server and the
/// scheduler add (the pod is bound to [`NODE_NAME`] at once).
pub fn validate_and_default(pod: &mut Value, name: &str) -> Result<(), ApiError> {
    let invalid = |field: &str, detail: &str| ApiError::invalid("Pod", "", name, field, detail);
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Err(invalid("spec.containers", "Required value"));
    };
    let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) else {
        return Err(invalid("spec.containers", "Required value"));
    };
    if containers.is_empty() {
        return Err(invalid("spec.containers", "Required value"));
    }
    for (i, c) in containers.iter_mut().enumerate() {
        let Some(c) = c.as_object_mut() else {
            return Err(invalid(&format!("spec.containers[{i}]"), "Required value"));
        };
        if c.get("name")
            .and_then(Value::as_str)
            .map_or(true, str::is_empty)
        {
            return Err(invalid(
                &format!("spec.containers[{i}].name"),
                "Required value",
            ));
        }
        let Some(image) = c.get("image").and_then(Value::as_str).map(str::to_string) else {
            return Err(invalid(
                &format!("spec.containers[{i}].image"),
                "Required value",
            ));
        };
        let tag = image
            .rsplit('/')
            .next()
            .and_then(|l| l.split_once(':'))
            .map(|(_, t)| t);
        let pull = if tag.is_none() || tag == Some("latest") {
            "Always"
        } else {
            "IfNotPresent"
        };
        c.entry("imagePullPolicy").or_insert_with(|| pull.into());
        c.entry("resources").or_insert_with(|| json!({}));
        c.entry("terminationMessagePath")
            .or_insert_with(|| "/dev/termination-log".into());
        c.entry("terminationMessagePolicy")
            .or_insert_with(|| "File".into());
    }
    let defaults = [
        ("restartPolicy", json!("Always")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("serviceAccountName", json!("default")),
        ("securityContext", json!({})),
        ("enableServiceLinks", json!(true)),
        ("priority", json!(0)),
        ("nodeName", json!(NODE_NAME)),
    ];
    for (k, v) in defaults {
        spec.entry(k).or_insert(v);
    }
    if let Some(sa) = spec.get("serviceAccountName").cloned() {
        spec.insert("serviceAccount".into(), sa);
    }
    let now = meta::now_rfc3339();
    if let Some(map) = pod.as_object_mut() {
        map.insert(
            "status".into(),
            json!({
                "phase": "Pending",
                "conditions": [condition("PodScheduled", true, &now)],
                "hostIP": HOST_IP,
                "qosClass": "BestEffort",
            }),
        );
    }
    Ok(())
}

fn condition(kind: &str, ok: bool, now: &str) -> Value {
    json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "lastProbeTime": null,
        "lastTransitionTime": now,
    })
}

/// Put the pod in `phase` (`Running`, `Failed`, `Succeeded`; `Pending`
/// leaves it); `ip_seed` picks its IP. Returns whether anything changed.
pub fn set_phase(pod: &mut Value, phase: &str, ip_seed: u64) -> bool {
    let now = meta::now_rfc3339();
    let running = phase == "Running";
    let statuses: Vec<Value> = pod["spec"]["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let image = c["image"].as_str().unwrap_or("");
                    let state = if running {
                        json!({"running": {"startedAt": now}})
                    } else {
                        let (code, reason) = if phase == "Succeeded" {
                            (0, "Completed")
                        } else {
                            (1, "Error")
                        };
                        json!({"terminated": {
                            "exitCode": code, "reason": reason,
                            "startedAt": now, "finishedAt": now,
                            "containerID": container_id(ip_seed),
                        }})
                    };
                    json!({
                        "name": c["name"],
                        "state": state,
                        "lastState": {},
                        "ready": running,
                        "restartCount": 0,
                        "image": image,
                        "imageID": format!("{image}@sha256:{}", digest(image)),
                        "containerID": container_id(ip_seed),
                        "started": running,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let pod_ip = format!("10.244.{}.{}", (ip_seed / 250) % 250, ip_seed % 250 + 2);
    let status = match phase {
        "Running" | "Failed" | "Succeeded" => json!({
            "phase": phase,
            "conditions": [
                condition("Initialized", true, &now),
                condition("Ready", running, &now),
                condition("ContainersReady", running, &now),
                condition("PodScheduled", true, &now),
            ],
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": pod["metadata"]["creationTimestamp"],
            "containerStatuses": statuses,
            "qosClass": "BestEffort",
        }),
        _ => return false,
    };
    match pod.as_object_mut() {
        Some(map) => {
            map.insert("status".into(), status);
            true
        }
        None => false,
    }
}

fn container_id(seed: u64) -> String {
    format!(
        "containerd://{:064x}",
        u128::from(seed) * 0x9e37_79b9_7f4a_7c15
    )
}

/// A stable fake digest of an image name.
fn digest(image: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in image.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    format!("{h:016x}").repeat(4)
}
