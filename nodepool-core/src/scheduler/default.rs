//! The default scheduler: upstream nodepool 11's semantics.
//!
//! One pass goes through the pool's open requests the way upstream's pool
//! worker does (`PoolWorker._assignHandlers` and the request handler):
//!
//! 1. Requests this pool is already waiting on come first (upstream re-runs
//!    its paused handlers before it looks at new requests).
//! 2. A request this pool declined before is skipped. A new request is left
//!    to another registered pool when it asks for another provider that has a
//!    candidate pool, when a candidate pool of higher priority is not paused,
//!    or when this pool lacks a label some candidate pool has. It is left for
//!    later when a label's capacity is used up. Any request waits (without
//!    pausing the pool) when its tenant would exceed `tenant-resource-limits`.
//! 3. It is declined when the pool is disabled (`max-servers: 0`), lacks a
//!    label, lacks a label's image, or could not hold the request even empty.
//! 4. While the pool is paused, new requests are only declined, never taken.
//! 5. Otherwise each label gets a ready node (when `reuse`, one AZ per
//!    request) or a new node if the remaining cloud and pool quota, minus what
//!    this pass already accepted, holds it. If not, the request waits and the
//!    pool pauses; a min-ready request is declined instead, and a pool that
//!    releases at quota (static driver) does not pause.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Decision, DeclineReason, Limit, PoolInfo, RequestInfo, Scheduler, SchedulingInput,
    MIN_READY_REQUESTOR,
};
use crate::provider::Resources;

/// Upstream nodepool's request handling rules as a [`Scheduler`](super::Scheduler).
#[derive(Debug, Default, Clone)]
pub struct DefaultScheduler;

impl Scheduler for DefaultScheduler {
    fn schedule(&self, input: &SchedulingInput) -> Vec<Decision> {
        let mut pass = Pass::new(input);
        let order = input
            .requests
            .iter()
            .enumerate()
            .filter(|(_, r)| r.waiting)
            .chain(
                input
                    .requests
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| !r.waiting),
            );
        let mut decided: Vec<(usize, Decision)> = Vec::new();
        for (index, request) in order {
            let decision = pass.decide(request);
            tracing::trace!(
                request_id = %request.id,
                provider = %input.pool.provider,
                pool = %input.pool.pool,
                ?decision,
                "scheduled request"
            );
            if let Some(decision) = decision {
                decided.push((index, decision));
            }
        }
        decided.sort_by_key(|(index, _)| *index);
        decided.into_iter().map(|(_, d)| d).collect()
    }
}

/// Resources as plain numbers: `None` counts as nothing; other named
/// resources as floats (a GPU may be `0.5`), as upstream's quota sums them.
#[derive(Debug, Clone, Default, PartialEq)]
struct Amount {
    instances: u64,
    cores: u64,
    ram: u64,
    other: BTreeMap<String, f64>,
}

impl Amount {
    /// What is used, reading unknown as zero.
    fn used(r: &Resources) -> Self {
        Self {
            instances: r.instances.unwrap_or(0),
            cores: r.cores.unwrap_or(0),
            ram: r.ram.unwrap_or(0),
            other: r
                .other
                .iter()
                .map(|(name, q)| (name.to_string(), q.as_f64()))
                .collect(),
        }
    }

    /// What one node needs: always one instance, unknown cores/RAM as zero.
    fn node(r: &Resources) -> Self {
        Self {
            instances: r.instances.unwrap_or(1),
            ..Self::used(r)
        }
    }

    fn add(mut self, other: &Self) -> Self {
        self.instances = self.instances.saturating_add(other.instances);
        self.cores = self.cores.saturating_add(other.cores);
        self.ram = self.ram.saturating_add(other.ram);
        for (name, v) in &other.other {
            *self.other.entry(name.clone()).or_insert(0.0) += v;
        }
        self
    }

    /// The first limit (instances, cores, RAM, then the other resources in
    /// the limits' order) that `self` goes over. A resource the limits do
    /// not name is unlimited.
    fn exceeds(&self, limits: &Resources) -> Option<Limit> {
        let over = |limit: Option<u64>, value: u64| limit.is_some_and(|l| value > l);
        if over(limits.instances, self.instances) {
            Some(Limit::Instances)
        } else if over(limits.cores, self.cores) {
            Some(Limit::Cores)
        } else if over(limits.ram, self.ram) {
            Some(Limit::Ram)
        } else {
            limits.other.iter().find_map(|(name, limit)| {
                let value = self.other.get(name).copied().unwrap_or(0.0);
                (value > limit.as_f64()).then(|| Limit::Resource(name.to_string()))
            })
        }
    }
}

/// The state of one scheduling pass.
struct Pass<'a> {
    input: &'a SchedulingInput,
    /// Accepted in this pass, counted against the pool and the cloud.
    accepted: Amount,
    /// Accepted in this pass, by tenant.
    tenant_accepted: BTreeMap<&'a str, Amount>,
    /// Ready nodes handed out in this pass.
    reused: BTreeSet<&'a str>,
    /// Remaining per-label capacity.
    label_capacity: BTreeMap<String, u64>,
    /// The pool waits for a request: take no new one.
    paused: bool,
}

/// What one request would get.
struct Allocation<'a> {
    reuse: Vec<(usize, &'a str)>,
    launch: Vec<usize>,
    launched: Amount,
}

impl<'a> Pass<'a> {
    fn new(input: &'a SchedulingInput) -> Self {
        Self {
            input,
            accepted: Amount::default(),
            tenant_accepted: BTreeMap::new(),
            reused: BTreeSet::new(),
            label_capacity: input.pool.label_capacity.clone(),
            paused: false,
        }
    }

    fn pool(&self) -> &'a PoolInfo {
        &self.input.pool
    }

    /// What one node of `label` needs; `None` for a label the pool lacks.
    fn label_need(&self, label: &str) -> Option<Amount> {
        self.pool().labels.get(label).map(Amount::node)
    }

    /// What all the request's labels served by the pool need.
    fn request_need(&self, request: &RequestInfo) -> Amount {
        request
            .labels
            .iter()
            .filter_map(|l| self.label_need(l))
            .fold(Amount::default(), |total, need| total.add(&need))
    }

    fn decide(&mut self, request: &'a RequestInfo) -> Option<Decision> {
        let pool = self.pool();
        if request.declined_by.contains(&pool.launcher_id) {
            return None;
        }
        if !request.waiting
            && (self.yields_to_other_pool(request) || !self.has_label_capacity(request))
        {
            return None;
        }
        // Upstream checks a paused request's tenant only when it first takes
        // it; checking again keeps accepted requests within the tenant limit
        // even if the tenant's use grew meanwhile.
        if !self.has_tenant_quota(request) {
            return Some(Decision::Wait {
                request_id: request.id.clone(),
                limited_by: Limit::Tenant,
            });
        }
        if let Some(reason) = self.decline_reason(request) {
            return Some(Decision::Decline {
                request_id: request.id.clone(),
                reason,
            });
        }
        if self.paused && !request.waiting {
            return None;
        }
        match self.allocate(request) {
            Ok(allocation) => Some(self.commit(request, allocation)),
            Err(limit) => Some(self.at_limit(request, limit)),
        }
    }

    /// Whether another registered pool should handle the request.
    fn yields_to_other_pool(&self, request: &RequestInfo) -> bool {
        let pool = self.pool();
        let candidates: Vec<_> = self
            .input
            .launchers
            .iter()
            .filter(|l| {
                // This pool itself is no other pool: it may have left out a
                // label it registered (one it cannot size, e.g. no flavor
                // fits), and must then decline rather than wait for itself.
                l.id != pool.launcher_id
                    && request
                        .labels
                        .iter()
                        .all(|label| l.supported_labels.contains(label))
                    && !request.declined_by.contains(&l.id)
            })
            .collect();
        if let Some(wanted) = &request.provider {
            if *wanted != pool.provider && candidates.iter().any(|l| l.provider == *wanted) {
                return true;
            }
        }
        if candidates
            .iter()
            .any(|l| l.priority < pool.priority && !l.paused)
        {
            return true;
        }
        let missing = request.labels.iter().any(|l| !pool.labels.contains_key(l));
        missing && !candidates.is_empty()
    }

    fn has_label_capacity(&self, request: &RequestInfo) -> bool {
        request
            .labels
            .iter()
            .all(|l| self.label_capacity.get(l).map_or(true, |&c| c > 0))
    }

    fn has_tenant_quota(&self, request: &RequestInfo) -> bool {
        let Some(tenant) = request.tenant.as_deref() else {
            return true;
        };
        let Some(usage) = self.input.tenants.get(tenant) else {
            return true;
        };
        let accepted = self
            .tenant_accepted
            .get(tenant)
            .cloned()
            .unwrap_or_default();
        let total = Amount::used(&usage.used)
            .add(&accepted)
            .add(&self.request_need(request));
        total.exceeds(&usage.limits).is_none()
    }

    /// Upstream's decline reasons, in its order.
    fn decline_reason(&self, request: &RequestInfo) -> Option<DeclineReason> {
        let pool = self.pool();
        if pool.limits.instances == Some(0) {
            return Some(DeclineReason::ExceedsLimits(Limit::Instances));
        }
        if let Some(label) = request
            .labels
            .iter()
            .find(|l| !pool.labels.contains_key(*l))
        {
            return Some(DeclineReason::UnknownLabel(label.clone()));
        }
        if let Some(label) = request
            .labels
            .iter()
            .find(|l| pool.labels_without_image.contains(*l))
        {
            return Some(DeclineReason::ImageUnavailable(label.clone()));
        }
        let need = self.request_need(request);
        let cloud_limit = pool.cloud.as_ref().and_then(|c| need.exceeds(&c.limits));
        cloud_limit
            .or_else(|| need.exceeds(&pool.limits))
            .map(DeclineReason::ExceedsLimits)
    }

    /// Find a ready node or room for a new one for every label, or the limit
    /// that stops it.
    fn allocate(&self, request: &'a RequestInfo) -> Result<Allocation<'a>, Limit> {
        let pool = self.pool();
        let mut allocation = Allocation {
            reuse: Vec::new(),
            launch: Vec::new(),
            launched: Amount::default(),
        };
        let mut az: Option<&str> = None;
        for (index, label) in request.labels.iter().enumerate() {
            if request.reuse {
                if let Some(node) = self.find_ready(label, &allocation, az) {
                    az = az.or(node.az.as_deref());
                    allocation.reuse.push((index, node.id.as_str()));
                    continue;
                }
            }
            let need = self.label_need(label).unwrap_or_default();
            let pass_total = self.accepted.clone().add(&allocation.launched).add(&need);
            if let Some(cloud) = &pool.cloud {
                if let Some(limit) = Amount::used(&cloud.used)
                    .add(&pass_total)
                    .exceeds(&cloud.limits)
                {
                    return Err(limit);
                }
            }
            if let Some(limit) = Amount::used(&pool.used)
                .add(&pass_total)
                .exceeds(&pool.limits)
            {
                return Err(limit);
            }
            allocation.launch.push(index);
            allocation.launched = std::mem::take(&mut allocation.launched).add(&need);
        }
        Ok(allocation)
    }

    /// A ready node for `label` not handed out yet, in `az` if one is chosen.
    fn find_ready(
        &self,
        label: &str,
        allocation: &Allocation<'a>,
        az: Option<&str>,
    ) -> Option<&'a super::ReadyNode> {
        self.input.ready_nodes.iter().find(|node| {
            node.labels.iter().any(|l| l == label)
                && !self.reused.contains(node.id.as_str())
                && !allocation.reuse.iter().any(|(_, id)| *id == node.id)
                && az.map_or(true, |az| node.az.as_deref() == Some(az))
        })
    }

    fn commit(&mut self, request: &'a RequestInfo, allocation: Allocation<'a>) -> Decision {
        self.accepted = std::mem::take(&mut self.accepted).add(&allocation.launched);
        if let Some(tenant) = request.tenant.as_deref() {
            let need = self.request_need(request);
            let entry = self.tenant_accepted.entry(tenant).or_default();
            *entry = std::mem::take(entry).add(&need);
        }
        for &index in &allocation.launch {
            self.use_capacity(&request.labels[index]);
        }
        for (_, id) in &allocation.reuse {
            self.reused.insert(id);
            if let Some(node) = self.input.ready_nodes.iter().find(|n| n.id == *id) {
                for label in &node.labels {
                    self.use_capacity(label);
                }
            }
        }
        Decision::Accept {
            request_id: request.id.clone(),
            reuse: allocation
                .reuse
                .into_iter()
                .map(|(i, id)| (i, id.to_string()))
                .collect(),
            launch: allocation.launch,
        }
    }

    fn use_capacity(&mut self, label: &str) {
        if let Some(capacity) = self.label_capacity.get_mut(label) {
            *capacity = capacity.saturating_sub(1);
        }
    }

    fn at_limit(&mut self, request: &RequestInfo, limit: Limit) -> Decision {
        if request.requestor.as_deref() == Some(MIN_READY_REQUESTOR) {
            return Decision::Decline {
                request_id: request.id.clone(),
                reason: DeclineReason::AtCapacityForMinReady(limit),
            };
        }
        if !self.pool().release_at_quota {
            self.paused = true;
        }
        Decision::Wait {
            request_id: request.id.clone(),
            limited_by: limit,
        }
    }
}
