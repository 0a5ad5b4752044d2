#!/usr/bin/env python3
"""Write the golden JSON documents of tests/golden/ with upstream's own code.

Run with the interpreter of a venv holding nodepool==11.0.0:

    /opt/np11/bin/python scripts/golden/generate.py

Every document is the exact bytes upstream's model objects write to
ZooKeeper (``obj.serialize()`` for nodes, requests, builds and uploads;
``json.dumps(content, sort_keys=True)`` for components).  Two kinds of case:

* ``build``: an object built with upstream's classes; the Rust test builds
  the same object and must encode it to the same bytes.
* ``read``: an input document (``*.input.json``), and what upstream writes
  back after ``fromDict`` + ``serialize`` (``*.json``).  Upstream drops keys it
  does not know; nodepool-rs keeps them, appended after the known keys in
  their input order: ``*.ours.json`` is that document, made here by
  appending the unknown keys to upstream's ``toDict()`` before ``json.dumps``.

If a venv holding zuul==14.3.0 exists (``ZUUL_PYTHON``, default
/opt/zuul14/bin/python), a node request serialized by Zuul's own code is
added as an input (``request-read-zuul.input.json``); otherwise the
committed input is reused.

``manifest.json`` lists every case for the Rust test
(nodepool-core/tests/golden_model.rs).
"""

import json
import os
import pathlib
import struct
import subprocess
import sys
from unittest import mock

from nodepool.zk import components
from nodepool.zk import zookeeper as zk
from nodepool.zk.zookeeper import ImageBuild, ImageUpload, Node, NodeRequest

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE.parents[1] / "tests" / "golden"
ZUUL_PYTHON = os.environ.get("ZUUL_PYTHON", "/opt/zuul14/bin/python")

# Time values as they occur: time.time() results, integer-valued floats.
T1 = 1700000000.123456
T2 = 1699999999.5
T3 = 1700000001.0
# What time.time() returns while upstream decodes a record that has a
# state but no state_time (the state setter stamps the current time).
FIXED_NOW = 1234567890.25

NODE_STATES = sorted(Node.VALID_STATES)
REQUEST_STATES = sorted(NodeRequest.VALID_STATES)
BUILD_STATES = sorted(ImageBuild.VALID_STATES)
UPLOAD_STATES = sorted(ImageUpload.VALID_STATES)

KNOWN = {
    "node": set(Node().toDict()),
    "request": set(NodeRequest().toDict()),
    "build": set(ImageBuild().toDict()) | {"builder", "builder_id", "formats"},
    "upload": set(ImageUpload().toDict()),
}

UNICODE = "h\u00e9llo \u2713 \U0001F600 \u4e2d\u6587 \"q\" \\ \t\n\x00\x1f\x7f/"

manifest = []


def write(name, data):
    (OUT / name).write_bytes(data)


def build_case(kind, name, obj, **meta):
    data = obj.serialize()
    write(f"{name}.json", data)
    manifest.append(dict(kind=kind, mode="build", name=name, **meta))


def read_case(kind, name, input_bytes, **meta):
    """Decode input_bytes with upstream and record what it writes back."""
    d = json.loads(input_bytes)
    with mock.patch.object(zk.time, "time", return_value=FIXED_NOW):
        if kind == "node":
            obj = Node.fromDict(d, meta["id"])
        elif kind == "request":
            obj = NodeRequest.fromDict(d, meta["id"])
        elif kind == "build":
            obj = ImageBuild.fromDict(d, meta["image_name"], meta["id"])
        elif kind == "upload":
            obj = ImageUpload.fromDict(d, meta["build_id"],
                                       meta["provider_name"],
                                       meta["image_name"], meta["id"])
        else:
            raise ValueError(kind)
    write(f"{name}.input.json", input_bytes)
    write(f"{name}.json", obj.serialize())
    ours = obj.toDict()
    unknown = [k for k in d if k not in KNOWN[kind]]
    for k in unknown:
        ours[k] = d[k]
    write(f"{name}.ours.json", json.dumps(ours).encode("utf8"))
    stamped = "state" in d and "state_time" not in d
    manifest.append(dict(kind=kind, mode="read", name=name,
                         unknown_keys=unknown,
                         stamped_time=FIXED_NOW if stamped else None,
                         **meta))


def component_case(name, obj, kind, znode, mode="build", input_bytes=None):
    data = json.dumps(obj.content, sort_keys=True).encode("utf-8")
    if input_bytes is not None:
        write(f"{name}.input.json", input_bytes)
    write(f"{name}.json", data)
    manifest.append(dict(kind="component", mode=mode, name=name,
                         component_kind=kind, id=znode))


def nodes():
    build_case("node", "node-defaults", Node())
    for state in NODE_STATES:
        n = Node("0000000001")
        n.state = state
        n.state_time = T1
        build_case("node", f"node-state-{state}", n, id="0000000001",
                   state=state)

    n = Node("0000000042")
    n.state = zk.READY
    n.state_time = T2
    n.cloud = "cloud1"
    n.provider = "rax"
    n.pool = "main"
    n.type = ["ubuntu-jammy", "ubuntu-jammy-large"]
    n.allocated_to = "100-0000000007"
    n.az = "az1"
    n.region = "RegionOne"
    n.public_ipv4 = "203.0.113.5"
    n.private_ipv4 = "10.0.0.5"
    n.public_ipv6 = "2001:db8::5"
    n.host_id = "host-abc"
    n.interface_ip = "203.0.113.5"
    n.connection_type = "ssh"
    n.connection_port = 2222
    n.shell_type = "bash"
    n.image_id = "ubuntu-jammy-1700000000"
    n.launcher = "launcher1-12345-rax-main"
    n.created_time = T3
    n.external_id = "6f2c1e8a-0a4b-4a8e-9c3d-1b2a3c4d5e6f"
    n.hostname = "np0000000042"
    n.comment = "held for debugging"
    n.user_data = "#cloud-config\nruncmd: []\n"
    n.hold_job = "tenant/project/job"
    n.username = "ubuntu"
    n.host_keys = ["ssh-ed25519 AAAAC3Nza", "ssh-rsa AAAAB3Nza"]
    n.hold_expiration = 86400
    n.resources = {"cores": 8, "instances": 1, "ram": 16384,
                   "disk": 80.5, "gpu": 0.0}
    n.slot = 3
    n.attributes = {"executor-zone": "zone-a", "nested": {"x": [1, 2.5, None,
                                                            True, False]}}
    n.python_path = "/usr/bin/python3"
    n.tenant_name = "tenant-one"
    n.driver_data = {"volume": "vol-1", "ids": [1, 2]}
    n.requestor = "zuul-scheduler"
    n.node_properties = {"spot": False, "region": "r1"}
    build_case("node", "node-full", n, id="0000000042")

    n = Node("0000000003")
    n.state = zk.HOLD
    n.state_time = T1
    n.comment = UNICODE
    n.type = ["label-\u00e9"]
    n.attributes = {"\u00fcber": "\U0001F600"}
    build_case("node", "node-unicode", n, id="0000000003")

    n = Node("0000000004")
    # host_keys None (not representable in a new Rust record) is covered
    # by the read case node-read-nulls.
    n.node_properties = None
    n.comment = ""
    n.resources = {}
    n.attributes = {}
    n.driver_data = []
    n.username = ""
    build_case("node", "node-none-vs-empty", n, id="0000000004")

    n = Node("0000000005")
    n.state = zk.USED
    n.state_time = 1e16
    n.created_time = 1.5e-07
    n.resources = {"a": 0.1, "b": 1e22, "c": -0.0, "d": 123456789.0,
                   "e": 0.0001, "f": 1e-05, "g": 9999999999999998.0,
                   "h": 2.5e-300}
    build_case("node", "node-floats", n, id="0000000005")

    n = Node("0000000006")
    n.state = zk.IN_USE
    n.state_time = T1
    n.slot = 2 ** 62
    n.hold_expiration = 2 ** 40
    n.connection_port = 65535
    n.resources = {"ram": 2 ** 53 + 1, "neg": -(2 ** 63), "u": 2 ** 64 - 1}
    build_case("node", "node-large-ints", n, id="0000000006")

    read = {
        "unknown-keys": {
            "zzz_first_unknown": "kept", "state": "ready",
            "state_time": T1, "provider": "p1",
            "future_field": {"nested": [1, 2.0, "x"], "b": None},
            "type": ["l1"], "\u00fcnicode-key": "\u2713", "n": 1.0,
            "pool": "main"},
        "missing-keys": {},
        "old-type-string": {"state": "ready", "state_time": T1,
                            "type": "ubuntu-xenial", "provider": "p"},
        "type-empty-string": {"type": ""},
        "ssh-port-only": {"ssh_port": 2022},
        "hold-expiration-string": {"hold_expiration": "3600"},
        "hold-expiration-garbage": {"hold_expiration": "forever"},
        "hold-expiration-float": {"hold_expiration": 12.7},
        "hold-expiration-padded": {"hold_expiration": " -1_000 \n"},
        "int-state-time": {"state": "deleting", "state_time": 1700000000,
                           "created_time": 1699999999},
        "nulls": {"host_keys": None, "type": None, "connection_port": None,
                  "node_properties": None, "username": None,
                  "state_time": None},
        "state-without-time": {"state": "building"},
    }
    for case, d in read.items():
        read_case("node", f"node-read-{case}", json.dumps(d).encode("utf8"),
                  id="0000000099")
    # A compact writer (other separators, raw UTF-8).
    compact = {"state": "used", "state_time": T2, "comment": "\u00e9",
               "extra": [1, {"k": "v"}]}
    read_case("node", "node-read-compact-utf8",
              json.dumps(compact, separators=(",", ":"),
                         ensure_ascii=False).encode("utf8"),
              id="0000000100")


def requests():
    build_case("request", "request-defaults", NodeRequest())
    for state in REQUEST_STATES:
        r = NodeRequest("100-0000000001")
        r.state = state
        r.state_time = T1
        build_case("request", f"request-state-{state}", r,
                   id="100-0000000001", state=state)

    r = NodeRequest("200-0000000017")
    r.state = zk.FULFILLED
    r.state_time = T2
    r.declined_by = ["launcher-1-p1-main", "launcher-2-p2-\u00e9"]
    r.node_types = ["ubuntu-jammy", "centos-9"]
    r.nodes = ["0000000001", "0000000002"]
    r.reuse = False
    r.requestor = "zuul-scheduler-1"
    r.requestor_data = {"build_set_uuid": "abc", "n": [1, 2.5, None]}
    r.provider = "rax"
    r.relative_priority = -3
    r.event_id = "e1f2"
    r.created_time = T3
    r.tenant_name = "tenant-one"
    build_case("request", "request-full", r, id="200-0000000017")

    r = NodeRequest("100-0000000002")
    r.requestor_data = []
    r.relative_priority = 2 ** 40
    build_case("request", "request-empty-requestor-data", r,
               id="100-0000000002")

    read = {
        "unknown-keys": {"state": "pending", "state_time": T1,
                         "node_types": ["a"], "x-unknown": [1, 2],
                         "reuse": False, "another": {"z": 1, "a": 2}},
        "missing-keys": {},
        "nulls": {"declined_by": None, "nodes": None, "node_types": None,
                  "reuse": None, "relative_priority": None},
        "int-times": {"state": "requested", "state_time": 1700000000,
                      "created_time": 1700000000},
    }
    for case, d in read.items():
        read_case("request", f"request-read-{case}",
                  json.dumps(d).encode("utf8"), id="100-0000000005")

    zuul_input = OUT / "request-read-zuul.input.json"
    zuul_bytes = zuul_request()
    if zuul_bytes is None and zuul_input.exists():
        zuul_bytes = zuul_input.read_bytes()
    if zuul_bytes is not None:
        read_case("request", "request-read-zuul", zuul_bytes,
                  id="300-0000000009")
    else:
        print("warning: no Zuul request input available", file=sys.stderr)


def zuul_request():
    if not os.path.exists(ZUUL_PYTHON):
        return None
    out = subprocess.run([ZUUL_PYTHON, str(HERE / "zuul_request.py")],
                         check=True, capture_output=True)
    return out.stdout


def builds():
    build_case("build", "build-defaults", ImageBuild())
    for state in BUILD_STATES:
        b = ImageBuild("ubuntu", "0123456789abcdef0123456789abcdef")
        b.state = state
        b.state_time = T1
        build_case("build", f"build-state-{state}", b,
                   id="0123456789abcdef0123456789abcdef",
                   image_name="ubuntu", state=state)
    b = ImageBuild("ubuntu", "fedcba9876543210fedcba9876543210")
    b.state = zk.READY
    b.state_time = T2
    b.builder = "builder1.example.com"
    b.builder_id = "b0c1d2e3-uuid"
    b.formats = ["vhd", "qcow2", "raw"]
    b.username = "zuul"
    b.python_path = "auto"
    b.shell_type = "sh"
    build_case("build", "build-full", b,
               id="fedcba9876543210fedcba9876543210", image_name="ubuntu")

    read = {
        "unknown-keys": {"state": "building", "state_time": T1,
                         "formats": "raw,qcow2", "zz": True,
                         "builder": "b1"},
        "missing-keys": {},
        "nulls": {"builder": None, "builder_id": None, "formats": None,
                  "username": None, "python_path": None},
        "empty-formats": {"formats": "", "state": "failed",
                          "state_time": 1700000000},
        "odd-formats": {"formats": "raw,,qcow2,raw"},
    }
    for case, d in read.items():
        read_case("build", f"build-read-{case}", json.dumps(d).encode("utf8"),
                  id="0000000000000000000000000000abcd", image_name="img")


def uploads():
    build_case("upload", "upload-defaults", ImageUpload())
    for state in UPLOAD_STATES:
        u = ImageUpload("0123456789abcdef0123456789abcdef", "rax", "ubuntu",
                        "0000000001")
        u.state = state
        u.state_time = T1
        build_case("upload", f"upload-state-{state}", u, id="0000000001",
                   build_id="0123456789abcdef0123456789abcdef",
                   provider_name="rax", image_name="ubuntu", state=state)
    u = ImageUpload("0123456789abcdef0123456789abcdef", "rax", "ubuntu",
                    "0000000002", username="ubuntu",
                    python_path="/usr/bin/python3", shell_type="bash")
    u.state = zk.READY
    u.state_time = T2
    u.external_id = "9b0c-image-id"
    u.external_name = "ubuntu-1700000000"
    u.format = "qcow2"
    build_case("upload", "upload-full", u, id="0000000002",
               build_id="0123456789abcdef0123456789abcdef",
               provider_name="rax", image_name="ubuntu")

    read = {
        "unknown-keys": {"state": "ready", "state_time": T1,
                         "external_id": "x", "checksum": "abc",
                         "size": 123456789012},
        "missing-keys": {},
        "nulls": {"username": None, "python_path": None, "format": None},
        "state-without-time": {"state": "uploading"},
    }
    for case, d in read.items():
        read_case("upload", f"upload-read-{case}",
                  json.dumps(d).encode("utf8"), id="0000000007",
                  build_id="0000000000000000000000000000abcd",
                  provider_name="prov", image_name="img")


def comps():
    launcher = components.LauncherComponent(None, "launcher1.example.com",
                                            version="11.0.0")
    launcher.content["model_api"] = 0
    launcher.content["state"] = launcher.RUNNING
    component_case("component-launcher", launcher, "launcher",
                   "launcher1.example.com0000000001")

    builder = components.BuilderComponent(None, "b\u00fcilder", version=None)
    component_case("component-builder-defaults", builder, "builder",
                   "b\u00fcilder0000000000")

    pool = components.PoolComponent(None, "launcher1.example.com",
                                    version="11.0.0")
    pool.content.update({
        "id": "launcher1-1234-rax-main",
        "name": "main",
        "provider_name": "rax",
        "supported_labels": ["ubuntu-jammy", "centos-9"],
        "state": pool.RUNNING,
        "priority": 100,
    })
    pool.content["paused"] = True
    component_case("component-pool", pool, "pool",
                   "launcher1.example.com0000000002")

    pool = components.PoolComponent(None, "h", version=None)
    component_case("component-pool-defaults", pool, "pool", "h0000000003")

    reads = [
        ("component-read-pool-unknown", "pool", components.PoolComponent,
         {"zeta": 1, "hostname": "h2", "state": "paused", "alpha": [1.5],
          "supported_labels": ["x"], "priority": 50, "model_api": 0,
          "kind": "pool", "version": "11.0.0", "id": "i", "name": "n",
          "provider_name": "p", "paused": False}),
        ("component-read-launcher-missing", "launcher",
         components.LauncherComponent, {"hostname": "h3"}),
        ("component-read-builder-extra", "builder",
         components.BuilderComponent,
         {"hostname": "h4", "state": "initializing", "kind": "builder",
          "version": "10.0.0", "model_api": 0, "Zextra": {"b": 1, "a": 2}}),
    ]
    reads.append(("component-read-pool-no-hostname", "pool",
                  components.PoolComponent, {"state": "running"}))
    for name, kind, cls, d in reads:
        data = json.dumps(d).encode("utf-8")
        # The registry passes the znode name as the hostname; the data's
        # own "hostname" (if any) then replaces it.
        znode = "host0000000009"
        obj = cls.fromDict(None, znode, json.loads(data))
        component_case(name, obj, kind, znode, mode="read", input_bytes=data)


def floats():
    """Python's repr of many floats, for the Rust float formatter."""
    import random
    rnd = random.Random(11)
    values = [0.0, -0.0, 1.0, -1.0, 0.1, 0.5, 1e16, 1e15, 9999999999999998.0,
              1e17, 1e22, 1e-4, 1e-5, 0.00012345, 1.5e-7, 5e-324,
              1.7976931348623157e308, 2.2250738585072014e-308, T1, T2, T3,
              123456789.0, 1e100, 1.234e-100, 100.0, 1e300 * 10]
    values += [1700000000 + rnd.random() for _ in range(300)]
    values += [rnd.random() for _ in range(100)]
    values += [rnd.uniform(-1e6, 1e6) for _ in range(100)]
    while len(values) < 1000:
        bits = rnd.getrandbits(64)
        v = struct.unpack("<d", struct.pack("<Q", bits))[0]
        if v == v:  # not NaN
            values.append(v)
    rows = [[struct.unpack("<Q", struct.pack("<d", v))[0], json.dumps(v)]
            for v in values]
    write("floats.json", json.dumps(rows).encode("utf8"))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    zuul_input = OUT / "request-read-zuul.input.json"
    keep = zuul_input.read_bytes() if zuul_input.exists() else None
    for old in OUT.glob("*.json"):
        old.unlink()
    if keep is not None and not os.path.exists(ZUUL_PYTHON):
        zuul_input.write_bytes(keep)
    nodes()
    requests()
    builds()
    uploads()
    comps()
    floats()
    write("manifest.json",
          json.dumps({"generator": "scripts/golden/generate.py",
                      "nodepool": "11.0.0", "cases": manifest},
                     indent=1, sort_keys=True).encode("utf8") + b"\n")
    print(f"wrote {len(manifest)} cases to {OUT}")


if __name__ == "__main__":
    main()
