//! Spreading requests over the launchers that run the same pool:
//! rendezvous (highest random weight) hashing of each request id over the
//! pool's live nodepool-rs registrations.
//!
//! Every nodepool-rs pool worker registers its pool component with
//! [`COORDINATION_KEY`]. For an open request, the candidates are the
//! registrations of the same provider and pool that carry it and have not
//! declined the request, plus the worker itself; the one whose
//! `hash(request id, worker id)` is highest takes the request, the others
//! leave it alone (no lock, no decline). When a launcher stops or dies, its
//! registration goes with its session and the same hash picks among the
//! others, so only its share of requests moves. Workers that read the
//! registrations at different moments may both pick a request, or neither
//! for a pass: the request lock keeps the first case safe (one handler),
//! and the next pass, woken by the registration change, ends the second.
//! Pools of other providers or names, and upstream launchers (which do not
//! carry the key), take requests as upstream does: whoever locks first.

use crate::model::Component;

/// The key of a pool component that takes part in the spreading, and its
/// protocol version.
pub(crate) const COORDINATION_KEY: &str = "nodepool-rs-coordination";
/// The protocol: rendezvous hashing as [`weight`] computes it.
pub(crate) const COORDINATION_VERSION: &str = "hrw-1";

/// The live workers pool worker `me` (of `provider`/`pool`) shares its
/// requests with, read once a pass from the registrations.
#[derive(Debug)]
pub(crate) struct Peers<'a> {
    me: &'a str,
    others: Vec<&'a str>,
}

impl<'a> Peers<'a> {
    /// The workers of the same provider and pool in `components` that take
    /// part in the spreading, other than `me`.
    pub(crate) fn of(me: &'a str, provider: &str, pool: &str, components: &'a [Component]) -> Self {
        let others = components
            .iter()
            .filter(|c| {
                takes_part(c)
                    && c.provider_name.as_deref() == Some(provider)
                    && c.pool_name.as_deref() == Some(pool)
            })
            .filter_map(|c| c.id.as_deref())
            .filter(|id| *id != me)
            .collect();
        Self { me, others }
    }

    /// Whether `me` takes `request_id`, leaving out the workers in
    /// `declined_by`. Alone, it takes every request without hashing.
    pub(crate) fn take(&self, request_id: &str, declined_by: &[String]) -> bool {
        if self.others.is_empty() {
            return true;
        }
        let mine = (weight(request_id, self.me), self.me);
        !self
            .others
            .iter()
            .any(|id| !declined_by.iter().any(|d| d == id) && (weight(request_id, id), *id) > mine)
    }
}

/// Whether pool worker `me` (of `provider`/`pool`) takes `request_id`
/// among `components`, leaving out the workers in `declined_by`.
#[cfg(test)]
pub(crate) fn is_mine(
    me: &str,
    provider: &str,
    pool: &str,
    request_id: &str,
    declined_by: &[String],
    components: &[Component],
) -> bool {
    Peers::of(me, provider, pool, components).take(request_id, declined_by)
}

/// Whether a registration takes part in the spreading.
fn takes_part(c: &Component) -> bool {
    c.extra.get(COORDINATION_KEY).and_then(|v| v.as_str()) == Some(COORDINATION_VERSION)
}

/// The rendezvous weight of `worker` for `request`: FNV-1a over both, then
/// a 64-bit finaliser (splitmix64's) so that close ids spread. Stable
/// across builds and platforms: every launcher must compute the same.
pub(crate) fn weight(request: &str, worker: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in request.bytes().chain([0u8]).chain(worker.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::json::JsonValue;

    fn pool(id: &str, provider: &str, pool: &str, ours: bool) -> Component {
        let mut c = Component::new("pool", "host");
        c.id = Some(id.into());
        c.provider_name = Some(provider.into());
        c.pool_name = Some(pool.into());
        if ours {
            c.extra.insert(
                COORDINATION_KEY,
                JsonValue::String(COORDINATION_VERSION.into()),
            );
        }
        c
    }

    #[test]
    fn weights_are_stable_across_builds() {
        // Fixed values: a change here splits requests between launchers of
        // different versions.
        assert_eq!(weight("100-0000000001", "a"), weight("100-0000000001", "a"));
        assert_ne!(weight("100-0000000001", "a"), weight("100-0000000001", "b"));
        assert_eq!(weight("100-0000000001", "w1"), 0x44ef_5450_a2ac_a334);
        assert_eq!(weight("", ""), 0x25fc_6dd3_6ce0_4b20);
    }

    #[test]
    fn exactly_one_of_three_workers_takes_each_request_and_they_share() {
        let ids = ["w1", "w2", "w3"];
        let components: Vec<Component> = ids
            .iter()
            .map(|id| pool(id, "cloud", "main", true))
            .collect();
        let mut taken = [0usize; 3];
        for n in 0..3000 {
            let request = format!("100-{n:010}");
            let takers: Vec<usize> = (0..3)
                .filter(|&i| is_mine(ids[i], "cloud", "main", &request, &[], &components))
                .collect();
            assert_eq!(takers.len(), 1, "{request}: {takers:?}");
            taken[takers[0]] += 1;
        }
        for t in taken {
            assert!((800..1200).contains(&t), "uneven spread: {taken:?}");
        }
    }

    #[test]
    fn a_gone_worker_moves_only_its_own_share() {
        let all: Vec<Component> = ["w1", "w2", "w3"]
            .iter()
            .map(|id| pool(id, "cloud", "main", true))
            .collect();
        let without_w3 = &all[..2];
        for n in 0..500 {
            let request = format!("100-{n:010}");
            for me in ["w1", "w2"] {
                if is_mine(me, "cloud", "main", &request, &[], &all) {
                    assert!(
                        is_mine(me, "cloud", "main", &request, &[], without_w3),
                        "{request} moved from {me} though {me} lives"
                    );
                }
            }
        }
    }

    #[test]
    fn other_pools_upstream_workers_and_decliners_do_not_compete() {
        let request = "100-0000000007";
        // Find a worker id that outweighs "me" for this request.
        let rival = (0..100)
            .map(|i| format!("rival-{i}"))
            .find(|r| weight(request, r) > weight(request, "me"))
            .expect("some id outweighs");
        let beats = |c: Component, declined: &[String]| {
            !is_mine("me", "cloud", "main", request, declined, &[c])
        };
        assert!(beats(pool(&rival, "cloud", "main", true), &[]));
        assert!(!beats(pool(&rival, "cloud", "other", true), &[]));
        assert!(!beats(pool(&rival, "elsewhere", "main", true), &[]));
        assert!(
            !beats(pool(&rival, "cloud", "main", false), &[]),
            "upstream worker"
        );
        assert!(!beats(
            pool(&rival, "cloud", "main", true),
            std::slice::from_ref(&rival)
        ));
    }
}
