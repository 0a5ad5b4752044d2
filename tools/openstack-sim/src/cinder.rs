//! Cinder (block-storage v3), as much as nodepool reads of it: the
//! project's volume limits (`GET /v3/{project}/limits`) and its volumes
//! (`GET /v3/{project}/volumes/detail`), which are the boot volumes of the
//! servers booted from a new volume. Only served when
//! [`SimConfig::volume_limits`](crate::config::SimConfig::volume_limits) is
//! set; the catalog then lists a `block-storage` endpoint.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

use crate::{error_response, Service, SimState};

pub(crate) fn routes() -> Router<SimState> {
    Router::new()
        .route("/v3/{project}/limits", get(limits))
        .route("/v3/{project}/volumes/detail", get(volumes))
}

fn not_found() -> Response {
    error_response(
        Service::Volume,
        StatusCode::NOT_FOUND,
        "The resource could not be found.",
    )
}

async fn limits(State(state): State<SimState>, Path(_project): Path<String>) -> Response {
    let body = state.read(|c| {
        let l = c.config.volume_limits?;
        let (volumes, gigabytes) = c.volume_usage();
        Some(json!({"limits": {"rate": [], "absolute": {
            "maxTotalVolumes": l.max_volumes,
            "maxTotalVolumeGigabytes": l.max_gigabytes,
            "maxTotalSnapshots": 10, "maxTotalBackups": 10,
            "maxTotalBackupGigabytes": 1000,
            "totalVolumesUsed": volumes, "totalGigabytesUsed": gigabytes,
            "totalSnapshotsUsed": 0, "totalBackupsUsed": 0, "totalBackupGigabytesUsed": 0
        }}}))
    });
    match body {
        Some(body) => crate::json(StatusCode::OK, body),
        None => not_found(),
    }
}

async fn volumes(State(state): State<SimState>, Path(_project): Path<String>) -> Response {
    let body = state.read(|c| {
        c.config.volume_limits?;
        let volumes: Vec<Value> = c
            .servers
            .values()
            .filter(|s| s.deleted_at.is_none())
            .filter_map(|s| {
                let v = s.boot_volume.as_ref()?;
                Some(json!({
                    "id": v.id, "name": "", "size": v.size, "status": "in-use",
                    "bootable": "true", "multiattach": false, "volume_type": "__DEFAULT__",
                    "availability_zone": s.az, "metadata": {},
                    "attachments": [{
                        "id": v.id, "attachment_id": format!("att-{}", v.id),
                        "volume_id": v.id, "server_id": s.id, "host_name": null,
                        "device": "/dev/vda", "attached_at": crate::iso8601(s.created, true)
                    }]
                }))
            })
            .collect();
        Some(json!({ "volumes": volumes }))
    });
    match body {
        Some(body) => crate::json(StatusCode::OK, body),
        None => not_found(),
    }
}
