"""Drive kube-sim with the Python `kubernetes` client from PyPI, the way
upstream nodepool's kubernetes and openshiftpods drivers call it.

Usage: client_check.py KUBECONFIG. Asserts as it goes; prints one JSON
summary line at the end for the Rust test to check.
"""
import base64
import json
import sys

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

kubeconfig = sys.argv[1]
api = config.new_client_from_config(config_file=kubeconfig, context="kube-sim")
v1 = client.CoreV1Api(api)
rbac = client.RbacAuthorizationV1Api(api)
summary = {"host": api.configuration.host}


def status_of(call, *args, **kwargs):
    """The (HTTP status, Status reason) of a call that must fail."""
    try:
        call(*args, **kwargs)
    except ApiException as e:
        return e.status, json.loads(e.body).get("reason")
    raise AssertionError("%s%r should have failed" % (call.__name__, args))


NS = "pool-0000000042"
labels = {"nodepool_provider_name": "kubespray", "nodepool_node_id": "0000000042",
          "nodepool_pool_name": "pool"}

# Namespace, as upstream's createNamespace makes it.
ns = v1.create_namespace({"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": NS, "labels": labels}})
assert ns.metadata.name == NS and ns.status.phase == "Active", ns
assert ns.metadata.labels["nodepool_node_id"] == "0000000042"
assert v1.read_namespace(NS).metadata.uid == ns.metadata.uid
found = [n.metadata.name for n in v1.list_namespace(
    label_selector="nodepool_provider_name=kubespray,nodepool_node_id!=1,"
                   "nodepool_pool_name in (pool,other)").items]
assert found == [NS], found
assert NS not in [n.metadata.name for n in v1.list_namespace(
    label_selector="nodepool_pool_name notin (pool)").items]
assert [n.metadata.name for n in v1.list_namespace(
    field_selector="metadata.name=%s" % NS).items] == [NS]
summary["namespace"] = True

# ServiceAccount and its token Secret; the token controller fills it in.
user = "zuul-worker"
v1.create_namespaced_service_account(NS, {"apiVersion": "v1", "kind": "ServiceAccount",
                                          "metadata": {"name": user}})
assert v1.read_namespaced_service_account(user, NS).metadata.namespace == NS
sas = sorted(s.metadata.name for s in v1.list_namespaced_service_account(NS).items)
assert sas == ["default", user], sas
v1.create_namespaced_secret(NS, {
    "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
    "metadata": {"name": user,
                 "annotations": {"kubernetes.io/service-account.name": user}}})
secret = v1.read_namespaced_secret(user, NS)
token = base64.b64decode(secret.data["token"]).decode()
ca_crt = base64.b64decode(secret.data["ca.crt"]).decode()
assert token and ca_crt.startswith("-----BEGIN CERTIFICATE-----"), secret.data
assert base64.b64decode(secret.data["namespace"]).decode() == NS
assert secret.metadata.annotations["kubernetes.io/service-account.uid"]
summary["token_secret"] = True

# The service account's token is a valid credential (as Zuul uses it).
sa_conf = client.Configuration()
sa_conf.host = api.configuration.host
sa_conf.ssl_ca_cert = api.configuration.ssl_ca_cert
sa_conf.api_key = {"authorization": "Bearer " + token}
sa_v1 = client.CoreV1Api(client.ApiClient(sa_conf))
assert sa_v1.list_namespaced_pod(NS).items == []
bad_conf = client.Configuration()
bad_conf.host = api.configuration.host
bad_conf.ssl_ca_cert = api.configuration.ssl_ca_cert
bad_conf.api_key = {"authorization": "Bearer nope"}
assert status_of(client.CoreV1Api(client.ApiClient(bad_conf)).list_namespace) == \
    (401, "Unauthorized")
summary["token_usable"] = True

# Role and RoleBinding (upstream's restricted role).
all_verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]
rbac.create_namespaced_role(NS, {
    "kind": "Role", "apiVersion": "rbac.authorization.k8s.io/v1",
    "metadata": {"name": "zuul-restricted"},
    "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
              {"apiGroups": [""], "resources": ["pods/exec"], "verbs": all_verbs}]})
rbac.create_namespaced_role_binding(NS, {
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
    "metadata": {"name": "zuul-role"},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                "name": "zuul-restricted"},
    "subjects": [{"kind": "ServiceAccount", "name": user, "namespace": NS}]})
role = rbac.read_namespaced_role("zuul-restricted", NS)
assert role.rules[1].resources == ["pods/exec"], role.rules
binding = rbac.read_namespaced_role_binding("zuul-role", NS)
assert binding.role_ref.name == "zuul-restricted" and binding.subjects[0].name == user
assert [r.metadata.name for r in rbac.list_namespaced_role(NS).items] == ["zuul-restricted"]
assert [b.metadata.name for b in rbac.list_namespaced_role_binding(NS).items] == ["zuul-role"]
summary["rbac"] = True

# A pod, watched until it runs (resourceVersion from the list).
pods = v1.list_namespaced_pod(NS)
rv = pods.metadata.resource_version
v1.create_namespaced_pod(NS, {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "pod-fedora", "labels": labels},
    "spec": {"containers": [{"name": "pod-fedora", "image": "docker.io/fedora:28",
                             "imagePullPolicy": "IfNotPresent",
                             "command": ["/bin/sh", "-c"],
                             "args": ["while true; do sleep 30; done;"],
                             "resources": {"requests": {"cpu": "2", "memory": "1024Mi"}}}]}})
events = []
w = watch.Watch()
for ev in w.stream(v1.list_namespaced_pod, NS, resource_version=rv, timeout_seconds=20):
    events.append((ev["type"], ev["object"].status.phase))
    if ev["object"].status.phase == "Running":
        w.stop()
assert events[0] == ("ADDED", "Pending"), events
assert events[-1] == ("MODIFIED", "Running"), events
pod = v1.read_namespaced_pod("pod-fedora", NS)
assert pod.spec.node_name == "kube-sim-node" and pod.status.pod_ip, pod.status
conds = {c.type: c.status for c in pod.status.conditions}
assert conds == {"PodScheduled": "True", "Initialized": "True",
                 "ContainersReady": "True", "Ready": "True"}, conds
assert pod.status.container_statuses[0].ready is True
assert [p.metadata.name for p in v1.list_namespaced_pod(
    NS, label_selector="nodepool_node_id=0000000042").items] == ["pod-fedora"]
assert v1.list_namespaced_pod(NS, field_selector="status.phase=Pending").items == []
summary["pod_events"] = [t for t, _ in events]

# Errors as Kubernetes Status objects.
assert status_of(v1.create_namespace, {"metadata": {"name": NS}}) == (409, "AlreadyExists")
assert status_of(v1.create_namespace, {"metadata": {"name": "Bad_Name"}}) == (422, "Invalid")
assert status_of(v1.read_namespaced_pod, "missing", NS) == (404, "NotFound")
assert status_of(v1.list_namespace, label_selector="a in b") == (400, "BadRequest")
summary["errors"] = True

# Delete the pod: Terminating first, then DELETED on a watch, then 404.
rv = v1.list_namespaced_pod(NS).metadata.resource_version
deleted = v1.delete_namespaced_pod("pod-fedora", NS)
assert deleted.metadata.deletion_timestamp is not None
seen = []
for ev in w.stream(v1.list_namespaced_pod, NS, resource_version=rv, timeout_seconds=20):
    seen.append(ev["type"])
    if ev["type"] == "DELETED":
        w.stop()
assert seen[-1] == "DELETED", seen
assert status_of(v1.read_namespaced_pod, "pod-fedora", NS) == (404, "NotFound")
summary["pod_delete_events"] = seen

# Delete the other kinds, each then 404.
rbac.delete_namespaced_role_binding("zuul-role", NS)
assert status_of(rbac.read_namespaced_role_binding, "zuul-role", NS)[0] == 404
rbac.delete_namespaced_role("zuul-restricted", NS)
assert status_of(rbac.read_namespaced_role, "zuul-restricted", NS)[0] == 404
v1.delete_namespaced_secret(user, NS)
assert status_of(v1.read_namespaced_secret, user, NS)[0] == 404
v1.delete_namespaced_service_account(user, NS)
assert status_of(v1.read_namespaced_service_account, user, NS)[0] == 404

# A namespace watch sees the namespace go, as upstream's cleanupNode deletes it.
rv = v1.list_namespace().metadata.resource_version
v1.delete_namespace(NS, body={"apiVersion": "v1", "kind": "DeleteOptions",
                              "propagationPolicy": "Background"})
ns_events = []
for ev in w.stream(v1.list_namespace, field_selector="metadata.name=%s" % NS,
                   resource_version=rv, timeout_seconds=20):
    ns_events.append((ev["type"], ev["object"].status.phase))
    if ev["type"] == "DELETED":
        w.stop()
assert ns_events[0] == ("MODIFIED", "Terminating"), ns_events
assert ns_events[-1][0] == "DELETED", ns_events
assert status_of(v1.read_namespace, NS) == (404, "NotFound")
summary["namespace_events"] = [t for t, _ in ns_events]

print(json.dumps(summary))
