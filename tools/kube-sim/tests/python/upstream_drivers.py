"""Run upstream nodepool 11's own kubernetes and openshiftpods provider code
against kube-sim: KubernetesProvider.createNamespace/createPod/cleanupNode
and OpenshiftPodsProvider.createPod/waitForPod/listNodes/cleanupNode.

Usage: upstream_drivers.py KUBECONFIG. Prints one JSON line of what the
providers returned; the Rust test checks it and the simulator's objects.
"""
import json
import logging
import os
import sys
import types
from unittest import mock

logging.basicConfig(level=logging.WARNING)
os.environ["KUBECONFIG"] = sys.argv[1]

from kubernetes import client, config  # noqa: E402
from nodepool.driver.kubernetes.provider import KubernetesProvider  # noqa: E402
from nodepool.driver.openshiftpods.provider import OpenshiftPodsProvider  # noqa: E402


def label(name, **extra):
    attrs = dict(
        name=name, labels={"team": "ci"}, dynamic_labels={}, annotations={"a": "b"},
        spec=None, image="docker.io/fedora:28", image_pull="IfNotPresent",
        image_pull_secrets=[], env=[{"name": "X", "value": "1"}], cpu=2,
        memory=1024, storage=None, cpu_limit=None, memory_limit=None,
        storage_limit=None, gpu_resource=None, gpu=None, volume_mounts=None,
        privileged=None, node_selector=None, scheduler_name=None, volumes=None,
        extra_resources={}, python_path="auto", shell_type=None)
    attrs.update(extra)
    return types.SimpleNamespace(**attrs)


request = mock.Mock()
request.getSafeAttributes.return_value = {}
out = {}

# kubernetes driver: a namespace node, then a pod node.
prov = mock.Mock()
prov.context = "kube-sim"
prov.name = "kubespray"
prov.pools = {}
k8s = KubernetesProvider(prov)
k8s.start(None)
node = mock.Mock()
node.id = "0000000001"
out["namespace"] = k8s.createNamespace(node, "main", label("kubernetes-namespace"), request)
node2 = mock.Mock()
node2.id = "0000000002"
out["pod"] = k8s.createPod(node2, "main", label("pod-fedora"), request)
out["pod_host_id"] = node2.host_id
out["servers"] = sorted(
    (s.id, s.metadata.get("nodepool_node_id")) for s in k8s.listNodes())
for server in ("main-0000000001", "main-0000000002"):
    k8s.cleanupNode(server)
    k8s.waitForNodeCleanup(server)

# openshiftpods driver: pods in an existing project.
api = config.new_client_from_config(context="kube-sim")
client.CoreV1Api(api).create_namespace({"metadata": {"name": "project1"}})
pool = types.SimpleNamespace(name="project1", labels={"pod-fedora": None})
oprov = mock.Mock()
oprov.context = "kube-sim"
oprov.name = "openshift-pods"
oprov.pools = {"project1": pool}
ocp = OpenshiftPodsProvider(oprov)
ocp.start(None)
node3 = mock.Mock()
node3.id = "0000000003"
pod_name = "pod-fedora-0000000003"
ocp.createPod(node3, "project1", "project1", pod_name, label("pod-fedora"), request)
out["openshift_host_id"] = ocp.waitForPod("project1", pod_name)
out["openshift_token"] = ocp.token
out["openshift_ca_crt"] = ocp.ca_crt
out["openshift_servers"] = [(s.id, s.metadata) for s in ocp.listNodes()]
ocp.cleanupNode("project1-" + pod_name)
ocp.waitForNodeCleanup("project1-" + pod_name)
out["openshift_after_cleanup"] = [s.id for s in ocp.listNodes()]
print(json.dumps(out, default=str))
