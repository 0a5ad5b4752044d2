//! Neutron work of the provider: floating IPs for `auto-floating-ip`
//! pools, deleting them with their server, and upstream's cleanup of
//! leaked DOWN ports and (with `clean-floating-ips`) unattached floating
//! IPs.

use std::collections::BTreeSet;

use nodepool_core::provider::{Instance, InstanceState, LeakedResources};
use nodepool_core::Result;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::client::{Payload, ServiceType};
use super::error::OpenStackError;
use super::provider::{encode, OpenStackProvider};
use super::server;

/// The kind of leaked ports deleted, as upstream's counter
/// `nodepool.provider.<provider>.leaked.ports` names it.
pub const LEAKED_PORTS: &str = "ports";
/// The kind of leaked floating IPs deleted
/// (`nodepool.provider.<provider>.leaked.floatingips`).
pub const LEAKED_FLOATING_IPS: &str = "floatingips";

/// Upstream's two-pass port cleanup: a DOWN compute port seen in one pass
/// and still DOWN `port-cleanup-interval` later is deleted.
#[derive(Debug, Default)]
pub struct PortCleanup {
    last: Option<Instant>,
    down: BTreeSet<String>,
}

/// Ports of servers or of nothing: not routers' or DHCP's.
pub(crate) fn compute_ports(body: &Value) -> BTreeSet<String> {
    body["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            let owner = p["device_owner"].as_str().unwrap_or("");
            owner.is_empty() || owner.starts_with("compute:")
        })
        .filter_map(|p| p["id"].as_str().map(str::to_string))
        .collect()
}

impl OpenStackProvider {
    /// The server, with a floating IP if its pool wants one and it has no
    /// public address: `Building` until Nova shows the address.
    pub(crate) async fn ensure_floating_ip(
        &self,
        server: &Value,
        inst: Instance,
    ) -> Result<Instance> {
        let cloud = self.client.cloud();
        let wants = self.pool_of(&inst).is_some_and(|p| p.auto_floating_ip);
        let addrs = server::addresses(server);
        if !wants
            || !cloud.floating_ips
            || cloud.private
            || addrs.public_v4.is_some()
            || addrs.private_v4.is_none()
        {
            return Ok(inst);
        }
        let _guard = self.fip_lock.lock().await;
        self.attach_floating_ip(&inst.external_id)
            .await
            .map_err(|e| self.err(e))?;
        // Nova shows the address once Neutron has told it.
        let Some(refreshed) = self
            .fetch_server(&inst.external_id)
            .await
            .map_err(|e| self.err(e))?
        else {
            return Ok(Instance {
                state: Some(InstanceState::Building),
                ..inst
            });
        };
        match server::instance(&refreshed, place(self), None) {
            Some(mut fresh) if server::addresses(&refreshed).public_v4.is_some() => {
                fresh.resources = inst.resources;
                Ok(fresh)
            }
            _ => Ok(Instance {
                state: Some(InstanceState::Building),
                ..inst
            }),
        }
    }

    /// Attach a floating IP to the server's first port unless one is.
    async fn attach_floating_ip(&self, server_id: &str) -> std::result::Result<(), OpenStackError> {
        let ports = self
            .client
            .get(
                ServiceType::Network,
                &format!("/ports?device_id={}", encode(server_id)),
            )
            .await?;
        let Some(port) = ports["ports"][0]["id"].as_str() else {
            return Ok(());
        };
        let fips = self
            .client
            .get(
                ServiceType::Network,
                &format!("/floatingips?port_id={}", encode(port)),
            )
            .await?;
        if fips["floatingips"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
        {
            return Ok(());
        }
        let nets = self
            .client
            .get(ServiceType::Network, "/networks?router:external=true")
            .await?;
        let Some(external) = nets["networks"][0]["id"].as_str() else {
            return Err(OpenStackError::NotFound(
                "no external network to take a floating IP from".to_string(),
            ));
        };
        let body = json!({"floatingip": {"floating_network_id": external, "port_id": port}});
        let answer = self
            .client
            .call(
                ServiceType::Network,
                Method::POST,
                "/floatingips",
                Payload::Json(body),
            )
            .await?;
        tracing::debug!(
            server = server_id,
            floating_ip = answer.body["floatingip"]["floating_ip_address"]
                .as_str()
                .unwrap_or(""),
            "attached a floating IP"
        );
        Ok(())
    }

    /// Delete the floating IPs Nova lists on `server`.
    pub(crate) async fn delete_floating_ips(
        &self,
        server: &Value,
    ) -> std::result::Result<(), OpenStackError> {
        if !self.client.cloud().floating_ips {
            return Ok(());
        }
        for addr in server::addresses(server).floating {
            let query = format!("/floatingips?floating_ip_address={}", encode(&addr));
            let fips = self.client.get(ServiceType::Network, &query).await?;
            for fip in fips["floatingips"].as_array().into_iter().flatten() {
                if let Some(id) = fip["id"].as_str() {
                    self.client
                        .delete(ServiceType::Network, &format!("/floatingips/{id}"))
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn down_ports(&self) -> std::result::Result<BTreeSet<String>, OpenStackError> {
        let body = self
            .client
            .get(ServiceType::Network, "/ports?status=DOWN")
            .await?;
        Ok(compute_ports(&body))
    }

    /// One pass of the port cleanup (upstream's `_cleanupLeakedPorts`):
    /// the first pass remembers the DOWN compute ports; a later one, more
    /// than `port-cleanup-interval` whole seconds after the last, deletes
    /// those still DOWN. Returns how many were deleted (a port already
    /// gone counts, as upstream counts every delete that did not fail).
    /// `force` skips the `port-cleanup-interval` wait.
    pub async fn cleanup_leaked_ports(&self, force: bool) -> Result<usize> {
        let mut state = self.ports.lock().await;
        let Some(last) = state.last else {
            state.down = self.down_ports().await.map_err(|e| self.err(e))?;
            state.last = Some(Instant::now());
            return Ok(0);
        };
        let interval = self.config.port_cleanup_interval();
        // Upstream: `int(time.monotonic() - last) <= port_cleanup_interval`.
        let waited = last.elapsed().as_secs();
        if !force && interval.map_or(true, |i| waited <= i.as_secs()) {
            return Ok(0);
        }
        let current = self.down_ports().await.map_err(|e| self.err(e))?;
        let mut removed = 0;
        for id in current.intersection(&state.down) {
            match self
                .client
                .delete(ServiceType::Network, &format!("/ports/{id}"))
                .await
            {
                Ok(()) => {
                    removed += 1;
                    tracing::debug!(port = %id, provider = %self.config.name, "removed DOWN port");
                }
                Err(e) => tracing::warn!(port = %id, error = %e, "cannot delete DOWN port"),
            }
        }
        state.last = Some(Instant::now());
        state.down = self.down_ports().await.map_err(|e| self.err(e))?;
        Ok(removed)
    }

    /// Delete every floating IP attached to nothing, as openstacksdk's
    /// `delete_unattached_floating_ips` (what upstream calls): each delete
    /// is checked, and the count is returned only when every one deleted
    /// something; when one was already gone the answer is 0 (the SDK's
    /// `False`), so nothing is counted for the pass.
    pub async fn cleanup_floating_ips(&self) -> Result<usize> {
        let body = self
            .client
            .get(ServiceType::Network, "/floatingips")
            .await
            .map_err(|e| self.err(e))?;
        let mut removed = 0;
        let mut all_found = true;
        for fip in body["floatingips"].as_array().into_iter().flatten() {
            if !fip["port_id"].is_null() && fip["port_id"] != "" {
                continue;
            }
            if let Some(id) = fip["id"].as_str() {
                let found = self
                    .delete_floating_ip_checked(id)
                    .await
                    .map_err(|e| self.err(e))?;
                removed += 1;
                all_found &= found;
            }
        }
        Ok(if all_found { removed } else { 0 })
    }

    /// openstacksdk's `delete_floating_ip(id, retry=1)`: delete, then look
    /// the address up again (a listing, as with `use_direct_get=False`);
    /// gone or `DOWN` is done, otherwise delete once more. `false` when
    /// Neutron did not know the address (404), an error when it is still
    /// there after the second delete. (The SDK then also asks Nova's
    /// deprecated `os-floating-ips`, which only proxies Neutron; that call
    /// is not made here.)
    async fn delete_floating_ip_checked(
        &self,
        id: &str,
    ) -> std::result::Result<bool, OpenStackError> {
        let path = format!("/floatingips/{}", encode(id));
        for _ in 0..2 {
            match self
                .client
                .call(ServiceType::Network, Method::DELETE, &path, Payload::None)
                .await
            {
                Ok(_) => {}
                Err(e) if e.status() == Some(404) => return Ok(false),
                Err(e) => return Err(e),
            }
            let list = self
                .client
                .get(ServiceType::Network, "/floatingips")
                .await?;
            let still = list["floatingips"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|f| f["id"] == id);
            match still {
                None => return Ok(true),
                Some(f) if f["status"] == "DOWN" => return Ok(true),
                Some(_) => {}
            }
        }
        Err(OpenStackError::BadResponse {
            url: format!("DELETE {path}"),
            message: format!("floating IP {id} was deleted twice without error but is still there"),
        })
    }

    /// Upstream's cleanups at the end of `listResources`: leaked ports
    /// (unless `port-cleanup-interval` is 0) and, with
    /// `clean-floating-ips`, unattached floating IPs. A failure of one is
    /// logged and does not keep the other from running.
    pub(crate) async fn cleanup_network_leaks(&self) -> LeakedResources {
        let mut cleaned = LeakedResources::default();
        if self.config.port_cleanup_interval().is_some() {
            match self.cleanup_leaked_ports(false).await {
                Ok(n) => cleaned.add(LEAKED_PORTS, n as u64),
                Err(e) => {
                    tracing::warn!(provider = %self.config.name, error = %e, "port cleanup failed")
                }
            }
        }
        if self.config.clean_floating_ips == Some(true) {
            match self.cleanup_floating_ips().await {
                Ok(n) => cleaned.add(LEAKED_FLOATING_IPS, n as u64),
                Err(e) => {
                    tracing::warn!(provider = %self.config.name, error = %e, "floating IP cleanup failed")
                }
            }
        }
        cleaned
    }
}

fn place(p: &OpenStackProvider) -> server::Place<'_> {
    let cloud = p.client.cloud();
    server::Place {
        cloud: &cloud.name,
        region: cloud.region_name.as_deref(),
        private: cloud.private,
    }
}
