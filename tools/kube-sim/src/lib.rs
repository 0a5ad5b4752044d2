//! A Kubernetes API simulator for tests: core v1 and rbac v1 (namespaces, pods,
//! serviceaccounts, secrets, roles, rolebindings), label selectors, watches and
//! Kubernetes `Status` errors, served over plain HTTP with a bearer token.
