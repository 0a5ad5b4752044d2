//! Quota ahead of launches: what one instance type uses (vCPUs, cores and
//! memory from DescribeInstanceTypes, never a hand-kept table of sizes)
//! and the account's EC2 vCPU quotas (Service Quotas codes).
//!
//! EC2 counts running vCPUs per quota code, and a code covers the
//! instance types whose name starts with certain letters ("Running
//! On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"). The letters
//! map to codes as the account's quota names say (see
//! [`prefixes_of_quota_name`]), else as in upstream's
//! `INSTANCE_QUOTA_CODES`.

use std::collections::BTreeMap;

/// What one instance of a type uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeInfo {
    /// `vCpuInfo.defaultVCpus`: what EC2's quotas count.
    pub vcpus: u64,
    /// `vCpuInfo.defaultCores`: what `max-cores` counts (as upstream).
    pub cores: u64,
    /// `memoryInfo.sizeInMiB`.
    pub ram_mib: u64,
}

/// The on-demand and spot vCPU quota codes of an instance-type prefix.
const INSTANCE_QUOTA_CODES: &[(&str, &str, &str)] = &[
    ("a", "L-1216C47A", "L-34B43A08"),
    ("c", "L-1216C47A", "L-34B43A08"),
    ("d", "L-1216C47A", "L-34B43A08"),
    ("h", "L-1216C47A", "L-34B43A08"),
    ("i", "L-1216C47A", "L-34B43A08"),
    ("m", "L-1216C47A", "L-34B43A08"),
    ("r", "L-1216C47A", "L-34B43A08"),
    ("t", "L-1216C47A", "L-34B43A08"),
    ("z", "L-1216C47A", "L-34B43A08"),
    ("dl", "L-6E869C2A", "L-85EED4F7"),
    ("f", "L-74FC7D96", "L-88CF9481"),
    ("g", "L-DB2E81BA", "L-3819A6DF"),
    ("vt", "L-DB2E81BA", "L-3819A6DF"),
    ("u-", "L-43DA4232", ""),
    ("inf", "L-1945791B", "L-B5D1601B"),
    ("p", "L-417A185B", "L-7212CCBC"),
    ("x", "L-7295265B", "L-E3A00192"),
    ("trn", "L-2C3B7624", "L-6B0D517C"),
    ("hpc", "L-F7808C92", ""),
];

/// The prefix of an instance type that picks its quota: the letters (and
/// dashes) before the first digit (`t3.medium` → `t`, `u-6tb1.metal` →
/// `u-`); `None` when the name does not start that way.
pub fn type_prefix(instance_type: &str) -> Option<&str> {
    let end = instance_type.find(|c: char| c.is_ascii_digit())?;
    let prefix = &instance_type[..end];
    (!prefix.is_empty() && prefix.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .then_some(prefix)
}

/// The vCPU quota code of an instance type, on-demand or spot.
pub fn quota_code(instance_type: &str, spot: bool) -> Option<&'static str> {
    let prefix = type_prefix(instance_type)?;
    INSTANCE_QUOTA_CODES
        .iter()
        .find(|(p, _, _)| *p == prefix)
        .map(|(_, on_demand, spot_code)| if spot { *spot_code } else { *on_demand })
        .filter(|code| !code.is_empty())
}

/// The instance-type prefixes a Service Quotas quota name covers, and
/// whether it counts spot requests: "Running On-Demand Standard (A, C, D,
/// H, I, M, R, T, Z) instances" → `a`, `c`, ... on demand; "All G and VT
/// Spot Instance Requests" → `g`, `vt` spot; "Running On-Demand High
/// Memory instances" → `u-`. `None` for other quotas.
pub fn prefixes_of_quota_name(name: &str) -> Option<(Vec<String>, bool)> {
    let lower = name.trim().to_lowercase();
    let (middle, spot) = if let Some(rest) = lower.strip_prefix("running on-demand ") {
        (rest.strip_suffix(" instances")?, false)
    } else if let Some(rest) = lower.strip_prefix("all ") {
        (rest.strip_suffix(" spot instance requests")?, true)
    } else {
        return None;
    };
    let prefixes: Vec<String> =
        if let (Some(open), Some(close)) = (middle.find('('), middle.rfind(')')) {
            middle
                .get(open + 1..close)?
                .split(',')
                .map(|p| p.trim().to_string())
                .collect()
        } else if middle == "high memory" {
            vec!["u-".to_string()]
        } else {
            middle
                .split(" and ")
                .map(|p| p.trim().to_string())
                .collect()
        };
    let valid = !prefixes.is_empty()
        && prefixes
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c == '-'));
    valid.then_some((prefixes, spot))
}

/// The quota codes the account's quota names assign to instance-type
/// prefixes: prefix → (on-demand code, spot code).
pub type LearnedCodes = BTreeMap<String, (Option<String>, Option<String>)>;

/// Learn prefix → code from `(code, name)` pairs of ListServiceQuotas.
pub fn learn_codes<'a>(quotas: impl IntoIterator<Item = (&'a str, &'a str)>) -> LearnedCodes {
    let mut out = LearnedCodes::new();
    for (code, name) in quotas {
        let Some((prefixes, spot)) = prefixes_of_quota_name(name) else {
            continue;
        };
        for prefix in prefixes {
            let entry = out.entry(prefix).or_default();
            let slot = if spot { &mut entry.1 } else { &mut entry.0 };
            *slot = Some(code.to_string());
        }
    }
    out
}

/// The vCPU quota code of an instance type: from the account's quota
/// names when they name its prefix (so a family AWS adds later is found),
/// else from upstream's table.
pub fn quota_code_learned(
    instance_type: &str,
    spot: bool,
    learned: &LearnedCodes,
) -> Option<String> {
    let prefix = type_prefix(instance_type)?;
    if let Some((on_demand, spot_code)) = learned.get(prefix) {
        let code = if spot { spot_code } else { on_demand };
        if let Some(code) = code {
            return Some(code.clone());
        }
    }
    quota_code(instance_type, spot).map(str::to_string)
}

/// One label's use of a quota code: its instance type's vCPUs and cores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CodeUse {
    /// vCPUs per instance.
    pub vcpus: u64,
    /// Cores per instance.
    pub cores: u64,
}

/// The core limit the vCPU limits allow: each code's vCPU limit turned
/// into cores with the fewest cores per vCPU of the types that use it
/// (so no type can overrun the code), and the smallest over the codes.
/// `None` when no code has a limit.
pub fn cores_limit(
    limits: &BTreeMap<String, f64>,
    uses: &BTreeMap<String, Vec<CodeUse>>,
) -> Option<u64> {
    let mut out: Option<u64> = None;
    for (code, uses) in uses {
        let Some(limit) = limits.get(code) else {
            continue;
        };
        let ratio = uses
            .iter()
            .filter(|u| u.vcpus > 0)
            .map(|u| u.cores as f64 / u.vcpus as f64)
            .fold(f64::INFINITY, f64::min);
        if !ratio.is_finite() {
            continue;
        }
        let cores = (limit.max(0.0) * ratio).floor() as u64;
        out = Some(out.map_or(cores, |o| o.min(cores)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_codes_follow_upstreams_prefixes() {
        assert_eq!(quota_code("t3.medium", false), Some("L-1216C47A"));
        assert_eq!(quota_code("t3.medium", true), Some("L-34B43A08"));
        assert_eq!(quota_code("m7i-flex.large", false), Some("L-1216C47A"));
        assert_eq!(quota_code("dl1.24xlarge", false), Some("L-6E869C2A"));
        assert_eq!(quota_code("u-6tb1.metal", false), Some("L-43DA4232"));
        assert_eq!(quota_code("u-6tb1.metal", true), None);
        assert_eq!(quota_code("inf2.xlarge", true), Some("L-B5D1601B"));
        assert_eq!(quota_code("mac1.metal", false), None);
        assert_eq!(type_prefix("nodigits"), None);
    }

    #[test]
    fn quota_names_teach_prefixes() {
        let learned = learn_codes([
            (
                "L-1216C47A",
                "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances",
            ),
            (
                "L-34B43A08",
                "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests",
            ),
            ("L-DB2E81BA", "Running On-Demand G and VT instances"),
            ("L-43DA4232", "Running On-Demand High Memory instances"),
            ("L-NEWFAM01", "Running On-Demand Q instances"),
            ("L-0263D0A3", "EC2-VPC Elastic IPs"),
        ]);
        assert_eq!(
            quota_code_learned("t3.medium", true, &learned).as_deref(),
            Some("L-34B43A08")
        );
        assert_eq!(
            quota_code_learned("vt1.3xlarge", false, &learned).as_deref(),
            Some("L-DB2E81BA")
        );
        assert_eq!(
            quota_code_learned("u-6tb1.metal", false, &learned).as_deref(),
            Some("L-43DA4232")
        );
        // A family the table does not know is found by its quota's name.
        assert_eq!(quota_code("q1.large", false), None);
        assert_eq!(
            quota_code_learned("q1.large", false, &learned).as_deref(),
            Some("L-NEWFAM01")
        );
        // Without names the table answers.
        assert_eq!(
            quota_code_learned("p4d.24xlarge", false, &LearnedCodes::new()).as_deref(),
            Some("L-417A185B")
        );
        assert_eq!(prefixes_of_quota_name("EC2-VPC Elastic IPs"), None);
    }

    #[test]
    fn vcpu_limits_become_core_limits() {
        let limits = BTreeMap::from([
            ("L-1216C47A".to_string(), 64.0),
            ("L-DB2E81BA".to_string(), 8.0),
        ]);
        let mut uses: BTreeMap<String, Vec<CodeUse>> = BTreeMap::new();
        // t3.medium: 2 vCPUs on 1 core; c5.large the same.
        uses.entry("L-1216C47A".to_string())
            .or_default()
            .push(CodeUse { vcpus: 2, cores: 1 });
        assert_eq!(cores_limit(&limits, &uses), Some(32));
        // A g type with 4 vCPUs on 2 cores: 8 vCPUs allow 4 cores.
        uses.entry("L-DB2E81BA".to_string())
            .or_default()
            .push(CodeUse { vcpus: 4, cores: 2 });
        assert_eq!(cores_limit(&limits, &uses), Some(4));
        assert_eq!(cores_limit(&BTreeMap::new(), &uses), None);
    }
}
