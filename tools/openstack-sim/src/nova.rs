//! Nova (compute v2.1): servers, flavors, limits, availability zones and
//! the console-output action. Microversions are read from
//! `OpenStack-API-Version` / `X-OpenStack-Nova-API-Version`; from 2.47 on a
//! server embeds its flavor, as Nova does.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use crate::config::SimFlavor;
use crate::state::{new_id, now, BootVolume, Cloud, Port, Server};
use crate::{base_url, error_response, iso8601, Service, SimState};

/// The newest microversion the simulator claims.
const MAX_MICROVERSION: (u32, u32) = (2, 96);

pub(crate) fn routes() -> Router<SimState> {
    Router::new()
        .route("/", get(version))
        .route("/flavors", get(list_flavors))
        .route("/flavors/detail", get(list_flavors))
        .route("/flavors/{id}", get(show_flavor))
        .route("/limits", get(limits))
        .route("/os-availability-zone", get(availability_zones))
        .route("/servers", get(list_servers).post(create_server))
        .route("/servers/detail", get(list_servers))
        .route("/servers/{id}", get(show_server).delete(delete_server))
        .route("/servers/{id}/action", post(server_action))
}

fn err(status: StatusCode, message: &str) -> Response {
    error_response(Service::Compute, status, message)
}

/// The microversion the request asks for (2.1 when none).
fn microversion(headers: &HeaderMap) -> (u32, u32) {
    let value = headers
        .get("OpenStack-API-Version")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("compute "))
        .or_else(|| {
            headers
                .get("X-OpenStack-Nova-API-Version")
                .and_then(|v| v.to_str().ok())
        });
    match value.map(str::trim) {
        Some("latest") => MAX_MICROVERSION,
        Some(v) => v
            .split_once('.')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .unwrap_or((2, 1)),
        None => (2, 1),
    }
}

fn with_version(mv: (u32, u32), mut resp: Response) -> Response {
    let text = format!("compute {}.{}", mv.0, mv.1);
    if let Ok(v) = text.parse() {
        resp.headers_mut().insert("OpenStack-API-Version", v);
    }
    resp
}

async fn version(headers: HeaderMap) -> Response {
    let base = base_url(&headers);
    let (a, b) = MAX_MICROVERSION;
    crate::json(
        StatusCode::OK,
        json!({"version": {"id": "v2.1", "status": "CURRENT", "version": format!("{a}.{b}"),
            "min_version": "2.1", "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self", "href": format!("{base}/compute/v2.1/")}]}}),
    )
}

fn flavor_view(base: &str, f: &SimFlavor) -> Value {
    json!({
        "id": f.id, "name": f.name, "ram": f.ram, "vcpus": f.vcpus, "disk": f.disk,
        "OS-FLV-EXT-DATA:ephemeral": 0, "OS-FLV-DISABLED:disabled": false, "swap": "",
        "rxtx_factor": 1.0, "os-flavor-access:is_public": true, "description": null,
        "links": [{"rel": "self", "href": format!("{base}/compute/v2.1/flavors/{}", f.id)}]
    })
}

async fn list_flavors(State(state): State<SimState>, headers: HeaderMap) -> Response {
    let base = base_url(&headers);
    let flavors: Vec<Value> = state.read(|c| {
        c.config
            .flavors
            .iter()
            .map(|f| flavor_view(&base, f))
            .collect()
    });
    crate::json(StatusCode::OK, json!({ "flavors": flavors }))
}

async fn show_flavor(
    State(state): State<SimState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let base = base_url(&headers);
    state.read(|c| match c.config.flavors.iter().find(|f| f.id == id) {
        Some(f) => crate::json(StatusCode::OK, json!({"flavor": flavor_view(&base, f)})),
        None => err(
            StatusCode::NOT_FOUND,
            &format!("Flavor {id} could not be found."),
        ),
    })
}

async fn limits(State(state): State<SimState>) -> Response {
    let body = state.read(|c| {
        let (l, u) = (c.config.limits, c.usage());
        json!({"limits": {"rate": [], "absolute": {
            "maxTotalInstances": l.max_instances, "maxTotalCores": l.max_cores,
            "maxTotalRAMSize": l.max_ram, "totalInstancesUsed": u.instances,
            "totalCoresUsed": u.cores, "totalRAMUsed": u.ram,
            "maxServerMeta": 128, "maxImageMeta": 128, "maxPersonality": 5,
            "maxPersonalitySize": 10240, "maxTotalKeypairs": 100, "maxServerGroups": 10,
            "maxServerGroupMembers": 10, "totalServerGroupsUsed": 0,
            "maxSecurityGroups": 10, "maxSecurityGroupRules": 20,
            "totalSecurityGroupsUsed": 0, "maxTotalFloatingIps": 10, "totalFloatingIpsUsed": 0
        }}})
    });
    crate::json(StatusCode::OK, body)
}

async fn availability_zones(State(state): State<SimState>) -> Response {
    let zones: Vec<Value> = state.read(|c| {
        c.config
            .availability_zones
            .iter()
            .map(|z| json!({"zoneName": z, "zoneState": {"available": true}, "hosts": null}))
            .collect()
    });
    crate::json(StatusCode::OK, json!({ "availabilityZoneInfo": zones }))
}

fn addresses(cloud: &Cloud, server: &Server) -> Value {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for port in server.ports.iter().filter_map(|p| cloud.ports.get(p)) {
        let net = cloud
            .config
            .networks
            .iter()
            .find(|n| n.id == port.network_id)
            .map_or_else(|| port.network_id.clone(), |n| n.name.clone());
        let entry = out.entry(net).or_default();
        entry.push(json!({"version": 4, "addr": port.ip, "OS-EXT-IPS:type": "fixed", "OS-EXT-IPS-MAC:mac_addr": port.mac}));
        for fip in cloud.floating_ips.values() {
            if fip.port_id.as_deref() == Some(port.id.as_str()) {
                entry.push(json!({"version": 4, "addr": fip.address, "OS-EXT-IPS:type": "floating", "OS-EXT-IPS-MAC:mac_addr": port.mac}));
            }
        }
    }
    json!(out)
}

fn server_view(base: &str, cloud: &Cloud, s: &Server, mv: (u32, u32)) -> Value {
    let t = now();
    let status = s.status(t);
    let flavor = cloud.config.flavors.iter().find(|f| f.id == s.flavor_id);
    let flavor_json = match flavor {
        Some(f) if mv >= (2, 47) => json!({"original_name": f.name, "vcpus": f.vcpus, "ram": f.ram,
            "disk": f.disk, "ephemeral": 0, "swap": 0, "extra_specs": {}}),
        _ => {
            json!({"id": s.flavor_id, "links": [{"rel": "bookmark", "href": format!("{base}/compute/flavors/{}", s.flavor_id)}]})
        }
    };
    let image = match &s.image_id {
        Some(id) => {
            json!({"id": id, "links": [{"rel": "bookmark", "href": format!("{base}/compute/images/{id}")}]})
        }
        None => json!(""),
    };
    let volumes: Vec<Value> = s
        .boot_volume
        .iter()
        .map(|v| json!({"id": v.id, "delete_on_termination": v.delete_on_termination}))
        .collect();
    let (vm_state, power) = match status {
        "ACTIVE" => ("active", 1),
        "ERROR" => ("error", 0),
        _ => ("building", 0),
    };
    let task_state = if s.deleted_at.is_some() {
        json!("deleting")
    } else if status == "BUILD" {
        json!("spawning")
    } else {
        Value::Null
    };
    let mut v = json!({
        "id": s.id, "name": s.name, "status": status, "tenant_id": "p-demo", "user_id": "u-demo",
        "metadata": s.metadata, "hostId": if status == "BUILD" { "" } else { s.host_id.as_str() },
        "image": image, "flavor": flavor_json, "created": iso8601(s.created, false),
        "updated": iso8601(s.ready_at.unwrap_or(s.created).min(t), false),
        "addresses": addresses(cloud, s), "accessIPv4": "", "accessIPv6": "",
        "links": [{"rel": "self", "href": format!("{base}/compute/v2.1/servers/{}", s.id)}],
        "OS-DCF:diskConfig": "MANUAL", "progress": 0, "OS-EXT-AZ:availability_zone": s.az,
        "config_drive": if s.config_drive { "True" } else { "" }, "key_name": s.key_name,
        "OS-SRV-USG:launched_at": if status == "ACTIVE" { json!(iso8601(s.ready_at.unwrap_or(t), true)) } else { Value::Null },
        "OS-SRV-USG:terminated_at": null,
        "security_groups": s.security_groups.iter().map(|g| json!({"name": g})).collect::<Vec<_>>(),
        "OS-EXT-STS:task_state": task_state, "OS-EXT-STS:vm_state": vm_state,
        "OS-EXT-STS:power_state": power, "os-extended-volumes:volumes_attached": volumes,
        "locked": false, "description": null, "tags": [],
    });
    if status == "ERROR" {
        let message = s.fail_with.clone().unwrap_or_default();
        v["fault"] = json!({"code": 500, "message": message, "created": iso8601(s.ready_at.unwrap_or(t), false)});
    }
    v
}

async fn list_servers(
    State(state): State<SimState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let base = base_url(&headers);
    let mv = microversion(&headers);
    let limit: Option<usize> = q.get("limit").and_then(|l| l.parse().ok());
    let body = state.read(|cloud| {
        let t = now();
        let mut servers: Vec<&Server> = cloud.servers.values().collect();
        servers.sort_by(|a, b| b.created.total_cmp(&a.created).then(a.id.cmp(&b.id)));
        let mut iter = servers.into_iter().filter(|s| {
            q.get("name").map_or(true, |n| s.name.contains(n.as_str()))
                && q.get("status").map_or(true, |st| s.status(t).eq_ignore_ascii_case(st))
        });
        if let Some(marker) = q.get("marker") {
            iter.by_ref().find(|s| &s.id == marker);
        }
        let page: Vec<&Server> = match limit {
            Some(l) => iter.by_ref().take(l).collect(),
            None => iter.by_ref().collect(),
        };
        let more = iter.next().is_some();
        let views: Vec<Value> = page.iter().map(|s| server_view(&base, cloud, s, mv)).collect();
        let mut body = json!({ "servers": views });
        if let (true, Some(last), Some(l)) = (more, page.last(), limit) {
            body["servers_links"] = json!([{"rel": "next",
                "href": format!("{base}/compute/v2.1/servers/detail?limit={l}&marker={}", last.id)}]);
        }
        body
    });
    with_version(mv, crate::json(StatusCode::OK, body))
}

async fn show_server(
    State(state): State<SimState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let base = base_url(&headers);
    let mv = microversion(&headers);
    let resp = state.read(|cloud| match cloud.servers.get(&id) {
        Some(s) => crate::json(
            StatusCode::OK,
            json!({"server": server_view(&base, cloud, s, mv)}),
        ),
        None => err(
            StatusCode::NOT_FOUND,
            &format!("Instance {id} could not be found."),
        ),
    });
    with_version(mv, resp)
}

async fn delete_server(State(state): State<SimState>, Path(id): Path<String>) -> Response {
    state.update(|cloud| match cloud.servers.get_mut(&id) {
        Some(s) => {
            if s.deleted_at.is_none() {
                s.deleted_at = Some(now());
            }
            StatusCode::NO_CONTENT.into_response()
        }
        None => err(
            StatusCode::NOT_FOUND,
            &format!("Instance {id} could not be found."),
        ),
    })
}

async fn server_action(
    State(state): State<SimState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let action: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.read(|cloud| {
        let Some(s) = cloud.servers.get(&id) else {
            return err(
                StatusCode::NOT_FOUND,
                &format!("Instance {id} could not be found."),
            );
        };
        if action.get("os-getConsoleOutput").is_some() {
            let out = format!("[    0.000000] Booting {}\n{} login:\n", s.name, s.name);
            return crate::json(StatusCode::OK, json!({ "output": out }));
        }
        err(StatusCode::BAD_REQUEST, "Unsupported server action.")
    })
}

/// Validate a create request and turn it into a server (with its ports).
// The error is the answer to send; handlers return it at once.
#[allow(clippy::result_large_err)]
fn build_server(cloud: &mut Cloud, req: &Value) -> Result<Server, Response> {
    let bad = |m: &str| err(StatusCode::BAD_REQUEST, m);
    let name = req
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("'name' is a required property"))?;
    let flavor_ref = req
        .get("flavorRef")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("'flavorRef' is a required property"))?;
    let flavor = cloud
        .config
        .flavors
        .iter()
        .find(|f| f.id == flavor_ref || f.name == flavor_ref)
        .cloned()
        .ok_or_else(|| bad(&format!("Flavor {flavor_ref} could not be found.")))?;
    let bdm = req.get("block_device_mapping_v2").and_then(Value::as_array);
    let boot_bdm = bdm.and_then(|b| {
        b.iter().find(|d| {
            d.get("boot_index")
                .and_then(|i| i.as_i64().or_else(|| i.as_str()?.parse().ok()))
                == Some(0)
        })
    });
    let image_ref = match boot_bdm {
        Some(d) => d.get("uuid").and_then(Value::as_str),
        None => req.get("imageRef").and_then(Value::as_str),
    };
    let image_ref = image_ref.filter(|i| !i.is_empty()).ok_or_else(|| bad("Block Device Mapping is Invalid: You specified more local devices than the limit allows"))?;
    match cloud.images.get(image_ref) {
        Some(i) if i.status == "active" => {}
        Some(_) => return Err(bad(&format!("Image {image_ref} is not active."))),
        None => return Err(bad(&format!("Image {image_ref} could not be found."))),
    }
    let boot_volume = match boot_bdm {
        Some(d) if d.get("destination_type").and_then(Value::as_str) == Some("volume") => {
            Some(BootVolume {
                id: new_id(),
                size: d
                    .get("volume_size")
                    .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
                    .ok_or_else(|| bad("volume_size is required to boot from a new volume"))?,
                delete_on_termination: d
                    .get("delete_on_termination")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            })
        }
        _ => None,
    };
    let az = match req.get("availability_zone").and_then(Value::as_str) {
        Some(z) if cloud.config.availability_zones.iter().any(|a| a == z) => z.to_string(),
        Some(z) => {
            return Err(bad(&format!(
                "The requested availability zone is not available: {z}"
            )))
        }
        None => cloud
            .config
            .availability_zones
            .first()
            .cloned()
            .unwrap_or_else(|| "nova".to_string()),
    };
    let mut metadata = BTreeMap::new();
    if let Some(meta) = req.get("metadata") {
        let meta = meta
            .as_object()
            .ok_or_else(|| bad("Invalid input for field/attribute metadata."))?;
        if meta.len() > 128 {
            return Err(err(StatusCode::FORBIDDEN, "Quota exceeded for metadata_items: Requested 129, but already used 0 of 128 metadata_items"));
        }
        for (k, v) in meta {
            let v = v.as_str().ok_or_else(|| bad(&format!("Invalid input for field/attribute metadata. Value: {v} is not of type 'string'")))?;
            if k.is_empty() || k.len() > 255 || v.len() > 255 {
                return Err(bad("Invalid input for field/attribute metadata: keys and values are 1 to 255 characters"));
            }
            metadata.insert(k.clone(), v.to_string());
        }
    }
    let user_data = req
        .get("user_data")
        .and_then(Value::as_str)
        .map(str::to_string);
    if user_data.as_ref().is_some_and(|u| u.len() > 65535) {
        return Err(bad("User data too large."));
    }
    let mut network_ids = Vec::new();
    match req.get("networks") {
        Some(Value::Array(nets)) => {
            for n in nets {
                let id = n.get("uuid").and_then(Value::as_str).ok_or_else(|| {
                    bad("Bad networks format: network uuid is not in proper format")
                })?;
                if !cloud.config.networks.iter().any(|c| c.id == id) {
                    return Err(bad(&format!("Network {id} could not be found.")));
                }
                network_ids.push(id.to_string());
            }
        }
        Some(Value::String(s)) if s == "none" => {}
        _ => network_ids.extend(
            cloud
                .config
                .networks
                .iter()
                .find(|n| !n.external)
                .map(|n| n.id.clone()),
        ),
    }
    if let Some(message) = cloud.quota_refusal(flavor.vcpus, flavor.ram) {
        return Err(err(StatusCode::FORBIDDEN, &message));
    }
    let id = new_id();
    let mut ports = Vec::new();
    for net in network_ids {
        let prefix = cloud
            .config
            .networks
            .iter()
            .find(|n| n.id == net)
            .map(|n| n.prefix.clone())
            .unwrap_or_default();
        let port = Port {
            id: new_id(),
            network_id: net,
            device_id: id.clone(),
            device_owner: format!("compute:{az}"),
            status: "DOWN".to_string(),
            ip: cloud.next_ip(&prefix),
            mac: cloud.next_mac(),
        };
        ports.push(port.id.clone());
        cloud.ports.insert(port.id.clone(), port);
    }
    let created = now();
    let faults = &mut cloud.faults;
    let delay = faults
        .boot_delay_secs
        .unwrap_or(cloud.config.boot_delay_secs);
    let fail_with = match &mut faults.boot_error {
        Some(f) if f.times != Some(0) => {
            if let Some(t) = &mut f.times {
                *t -= 1;
            }
            Some(f.message.replace("{id}", &id))
        }
        _ => None,
    };
    Ok(Server {
        id,
        name: name.to_string(),
        image_id: if boot_volume.is_some() {
            None
        } else {
            Some(image_ref.to_string())
        },
        flavor_id: flavor.id,
        key_name: req
            .get("key_name")
            .and_then(Value::as_str)
            .map(str::to_string),
        az,
        metadata,
        user_data,
        security_groups: req
            .get("security_groups")
            .and_then(Value::as_array)
            .map_or_else(
                || vec!["default".to_string()],
                |g| {
                    g.iter()
                        .filter_map(|g| g.get("name")?.as_str().map(str::to_string))
                        .collect()
                },
            ),
        config_drive: req
            .get("config_drive")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        boot_volume,
        ports,
        created,
        ready_at: (!faults.never_boot).then_some(created + delay),
        fail_with,
        deleted_at: None,
        host_id: format!("{:x}", created.to_bits()),
    })
}

async fn create_server(
    State(state): State<SimState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let base = base_url(&headers);
    let mv = microversion(&headers);
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return err(StatusCode::BAD_REQUEST, "Malformed request body");
    };
    let Some(req) = request.get("server") else {
        return err(StatusCode::BAD_REQUEST, "'server' is a required property");
    };
    let resp = state.update(|cloud| match build_server(cloud, req) {
        Ok(server) => {
            let body = json!({"server": {
                "id": server.id, "OS-DCF:diskConfig": "MANUAL", "adminPass": "sim-admin-pass",
                "security_groups": server.security_groups.iter().map(|g| json!({"name": g})).collect::<Vec<_>>(),
                "links": [{"rel": "self", "href": format!("{base}/compute/v2.1/servers/{}", server.id)}]
            }});
            cloud.servers.insert(server.id.clone(), server);
            crate::json(StatusCode::ACCEPTED, body)
        }
        Err(resp) => resp,
    });
    with_version(mv, resp)
}
