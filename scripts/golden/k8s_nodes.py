#!/usr/bin/env python3
"""Write tests/golden/kubernetes/ with upstream's own kubernetes and
openshiftpods driver code.

Run with the interpreter of a venv holding nodepool==11.0.0:

    ~/.cache/nodepool-rs/venv-nodepool-11.0.0/bin/python scripts/golden/k8s_nodes.py

For each case the script writes ``<case>.yaml`` (a nodepool.yaml with one
provider), loads it with upstream's ``nodepool.config.loadConfig``, builds
upstream's provider with fake Kubernetes clients (as upstream's own unit
tests do in test_driver_kubernetes.py) and runs upstream's node launcher
(``K8SLauncher._launchLabel`` / ``OpenshiftPodLauncher._launchLabel``) for
node ``0000000001``. It then writes:

* ``<case>.node.json``: ``node.serialize()``, the bytes upstream stores;
* ``<case>.calls.json``: every create call the driver made, in order, as
  ``[method, namespace, body]``;
* ``<case>.fake.json``: what the fake clients answered (API host,
  verify_ssl, the token secret's data, the pod's node name, the provider's
  own token and CA), so the Rust test can tell these from the driver's
  decisions.

The Rust test is nodepool-drivers/tests/kubernetes_golden.rs.
"""

import base64
import json
import pathlib
import tempfile
from unittest import mock

from nodepool import config as nodepool_config
from nodepool.driver.kubernetes import handler as k8s_handler
from nodepool.driver.kubernetes import provider as k8s_provider
from nodepool.driver.openshiftpods import handler as osp_handler
from nodepool.driver.openshiftpods import provider as osp_provider
from nodepool.zk import zookeeper as zk

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE.parents[1] / "tests" / "golden" / "kubernetes"
FIXED_NOW = 1700000000.5
NODE_ID = "0000000001"
TOKEN = "fake-token"
SECRET_DATA = {
    "ca.crt": base64.b64encode(b"-----BEGIN CERTIFICATE-----\nfake\n").decode(),
    "token": base64.b64encode(TOKEN.encode()).decode(),
}
NODE_NAME = "k8s-default-pool-abcd-1234"
HOST = "https://k8s.example.com:6443"
PROVIDER_CA = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nprovider\n").decode()

HEAD = """zookeeper-servers:
  - host: localhost
labels:
  - name: pod-fedora
  - name: kubernetes-namespace
  - name: pod-custom
  - name: pod-limits
"""

CASES = {
    "kubernetes-pod": ("kubernetes", True, "pod-fedora", """
providers:
  - name: kubespray
    driver: kubernetes
    context: admin-cluster.local
    pools:
      - name: main
        node-attributes: {key1: value1}
        labels:
          - name: pod-fedora
            type: pod
            image: docker.io/fedora:28
            cpu: 2
            memory: 512
            env:
              - {name: FOO, value: hello}
              - {name: BAR, value: world}
            node-selector: {storageType: ssd}
            privileged: true
            volumes:
              - name: my-csi-inline-vol
                csi: {driver: inline.storage.kubernetes.io}
            volume-mounts:
              - {mountPath: /data, name: my-csi-inline-vol}
            scheduler-name: niftyScheduler
            labels: {environment: qa}
            dynamic-labels: {tenant: "{request.tenant_name}"}
            annotations: {team: infra}
            shell-type: csh
            python-path: /usr/bin/python3
"""),
    "kubernetes-namespace": ("kubernetes", False, "kubernetes-namespace", """
providers:
  - name: kubespray
    driver: kubernetes
    context: admin-cluster.local
    pools:
      - name: main
        labels:
          - name: kubernetes-namespace
            type: namespace
"""),
    "kubernetes-pod-spec": ("kubernetes", True, "pod-custom", """
providers:
  - name: kubespray
    driver: kubernetes
    pools:
      - name: main
        labels:
          - name: pod-custom
            type: pod
            spec:
              containers:
                - name: pod-custom
                  image: ubuntu:jammy
                  imagePullPolicy: IfNotPresent
                  command: ["/bin/sh", "-c"]
                  args: ["while true; do sleep 30; done;"]
            labels: {environment: qa}
            annotations: {team: infra}
"""),
    "kubernetes-pod-limits": ("kubernetes", True, "pod-limits", """
providers:
  - name: kubespray
    driver: kubernetes
    context: admin-cluster.local
    pools:
      - name: main
        default-label-cpu: 2
        default-label-memory: 1024
        default-label-cpu-limit: 8
        default-label-memory-limit: 4196
        labels:
          - name: pod-limits
            type: pod
            image: docker.io/fedora:28
            cpu-limit: 4
            gpu: 1.0
            gpu-resource: nvidia.com/gpu
"""),
    "kubernetes-pod-resources": ("kubernetes", True, "pod-limits", """
providers:
  - name: kubespray
    driver: kubernetes
    context: admin-cluster.local
    pools:
      - name: main
        max-resources: {nvidia.com/gpu: 4}
        labels:
          - name: pod-limits
            type: pod
            image: docker.io/fedora:28
            memory: 2048
            storage: 100
            gpu: 0.5
            gpu-resource: nvidia.com/gpu
            extra-resources: {zeta: 2, nvidia.com/gpu: 1, alpha: 1}
"""),
    "openshiftpods-pod": ("openshiftpods", True, "pod-fedora", """
providers:
  - name: openshift
    driver: openshiftpods
    context: "/hostname:8443/developer"
    pools:
      - name: main
        labels:
          - name: pod-fedora
            image: docker.io/fedora:28
            image-pull-secrets:
              - name: registry-secret
            cpu: 1
            memory: 256
            python-path: /usr/bin/python3
"""),
}


class Recorder:
    """Fake core and rbac clients that record every create call."""

    def __init__(self, verify_ssl):
        self.calls = []

        class Configuration:
            host = HOST

        Configuration.verify_ssl = verify_ssl

        class Api:
            configuration = Configuration

        self.api_client = Api()

    def _record(self, method, namespace, body):
        self.calls.append([method, namespace, body])

    def create_namespace(self, body):
        self._record("create_namespace", None, body)

        class Namespace:
            class metadata:
                name = body["metadata"]["name"]
        return Namespace

    def create_namespaced_service_account(self, ns, body):
        self._record("create_namespaced_service_account", ns, body)

    def create_namespaced_secret(self, ns, body):
        self._record("create_namespaced_secret", ns, body)

    def read_namespaced_secret(self, name, ns):
        class Secret:
            data = dict(SECRET_DATA)
        return Secret

    def create_namespaced_role(self, ns, body):
        self._record("create_namespaced_role", ns, body)

    def create_namespaced_role_binding(self, ns, body):
        self._record("create_namespaced_role_binding", ns, body)

    def create_namespaced_pod(self, ns, body):
        self._record("create_namespaced_pod", ns, body)

    def read_namespaced_pod(self, name, ns):
        class Pod:
            class status:
                phase = "Running"

            class spec:
                node_name = NODE_NAME
        return Pod


class Stub:
    """An attribute bag."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


def request():
    req = zk.NodeRequest("100-0000000001")
    req.tenant_name = "tenant-1"
    req.requestor = "zuul"
    return req


def run_case(name, driver, verify_ssl, label_name, providers_yaml):
    text = HEAD + providers_yaml
    (OUT / f"{name}.yaml").write_text(text)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write(text)
        f.flush()
        config = nodepool_config.loadConfig(f.name)
    provider_config = list(config.providers.values())[0]
    pool = list(provider_config.pools.values())[0]
    label = pool.labels[label_name]
    rec = Recorder(verify_ssl)
    if driver == "kubernetes":
        with mock.patch.object(k8s_provider, "get_client",
                               lambda log, ctx, ctor=None: (None, None, rec, rec)):
            manager = k8s_provider.KubernetesProvider(provider_config)
        launcher_cls = k8s_handler.K8SLauncher
    else:
        with mock.patch.object(osp_provider, "get_client",
                               lambda log, ctx, ctor=None: (TOKEN, PROVIDER_CA, rec, None)):
            manager = osp_provider.OpenshiftPodsProvider(provider_config)
        launcher_cls = osp_handler.OpenshiftPodLauncher
    zk_stub = Stub(storeNode=lambda node: None)
    handler = Stub(
        manager=manager,
        pool=pool,
        provider=provider_config,
        request=request(),
        zk=zk_stub,
        pw=Stub(nodepool=Stub(statsd=None)),
    )
    node = zk.Node(NODE_ID)
    node.type = [label_name]
    node.pool = pool.name
    node.provider = provider_config.name
    with mock.patch("time.time", return_value=FIXED_NOW):
        launcher = launcher_cls(handler, node, provider_config, label)
        launcher._launchLabel()
    (OUT / f"{name}.node.json").write_bytes(node.serialize())
    (OUT / f"{name}.calls.json").write_text(
        json.dumps(rec.calls, indent=2) + "\n")
    fake = {
        "node_id": NODE_ID,
        "label": label_name,
        "pool": pool.name,
        "host": HOST,
        "verify_ssl": verify_ssl,
        "secret_data": SECRET_DATA,
        "token": TOKEN,
        "pod_node_name": NODE_NAME,
        "provider_ca_crt": PROVIDER_CA if driver == "openshiftpods" else None,
        "request": {"tenant_name": "tenant-1", "requestor": "zuul"},
    }
    (OUT / f"{name}.fake.json").write_text(json.dumps(fake, indent=2) + "\n")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for pattern in ("*.json", "*.yaml"):
        for old in OUT.glob(pattern):
            old.unlink()
    for name, case in CASES.items():
        run_case(name, *case)
    (OUT / "manifest.json").write_text(json.dumps(sorted(CASES), indent=2) + "\n")


if __name__ == "__main__":
    main()
