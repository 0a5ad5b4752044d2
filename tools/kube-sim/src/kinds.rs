//! The resource kinds the simulator serves, with their discovery facts.

/// How a kind's `metadata.name` is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 label (namespaces): at most 63 of `[a-z0-9-]`.
    Label,
    /// RFC 1123 subdomain (pods, secrets, serviceaccounts).
    Subdomain,
    /// A path segment (roles, rolebindings): anything but `/`, `%`, `.`, `..`.
    PathSegment,
}

/// One served resource.
#[derive(Debug)]
pub struct Kind {
    /// The URL name (`pods`).
    pub plural: &'static str,
    /// The singular name (`pod`).
    pub singular: &'static str,
    /// The object kind (`Pod`).
    pub kind: &'static str,
    /// The API group (`""` for core).
    pub group: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// kubectl's short names.
    pub short_names: &'static [&'static str],
    /// The name validation.
    pub name_rule: NameRule,
    /// The top-level fields of the schema besides `apiVersion`, `kind` and
    /// `metadata`; the API server drops any other.
    pub fields: &'static [&'static str],
}

/// The rbac group.
pub const RBAC: &str = "rbac.authorization.k8s.io";

/// Every served kind.
pub static KINDS: &[Kind] = &[
    Kind {
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        group: "",
        namespaced: false,
        short_names: &["ns"],
        name_rule: NameRule::Label,
        fields: &["spec", "status"],
    },
    Kind {
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        group: "",
        namespaced: true,
        short_names: &["po"],
        name_rule: NameRule::Subdomain,
        fields: &["spec", "status"],
    },
    Kind {
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        group: "",
        namespaced: true,
        short_names: &["sa"],
        name_rule: NameRule::Subdomain,
        fields: &[
            "secrets",
            "imagePullSecrets",
            "automountServiceAccountToken",
        ],
    },
    Kind {
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        group: "",
        namespaced: true,
        short_names: &[],
        name_rule: NameRule::Subdomain,
        fields: &["data", "stringData", "type", "immutable"],
    },
    Kind {
        plural: "roles",
        singular: "role",
        kind: "Role",
        group: RBAC,
        namespaced: true,
        short_names: &[],
        name_rule: NameRule::PathSegment,
        fields: &["rules"],
    },
    Kind {
        plural: "rolebindings",
        singular: "rolebinding",
        kind: "RoleBinding",
        group: RBAC,
        namespaced: true,
        short_names: &[],
        name_rule: NameRule::PathSegment,
        fields: &["roleRef", "subjects"],
    },
];

impl Kind {
    /// `v1` or `group/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            "v1".into()
        } else {
            format!("{}/v1", self.group)
        }
    }
}

/// The kind served at `group`/`plural`.
pub fn lookup(group: &str, plural: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.plural == plural)
}

/// The kind whose URL name is `plural` (any group).
pub fn by_plural(plural: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.plural == plural)
}

/// The kind whose object kind is `kind` (`Pod`).
pub fn by_kind(kind: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.kind == kind)
}
