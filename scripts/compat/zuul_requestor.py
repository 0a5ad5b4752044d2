"""Zuul 14's own node request code as the requestor of a launcher.

Run with the Python of a venv holding zuul==14.3.0:

    python zuul_requestor.py HOSTS CA CERT KEY --label L --requests N \
        [--nodes-per-request 2] [--timeout SECONDS]

HOSTS may carry a chroot ("127.0.0.1:2281/test-1"). The script does what a
Zuul scheduler does (zuul/nodepool.py): it creates the tracing object once,
submits N requests of --nodes-per-request nodes of label L each with
Nodepool.requestNodes, waits until each is fulfilled (or failed), accepts
the nodes with Nodepool.acceptNodes (which checks allocated_to, locks the
nodes, re-checks allocated_to and deletes the request), sets them in-use
with useNodeSet and returns them as used with returnNodeSet.

It prints one JSON object on stdout:
    {"requests": [{"id", "state", "nodes", "in_use"}...], "errors": [...]}
where "in_use" lists the node states read back from ZooKeeper after
useNodeSet.
"""
import argparse
import configparser
import json
import time
import types
import uuid

import zuul.lib.tracing
from zuul import model
from zuul.nodepool import Nodepool
from zuul.zk import ZooKeeperClient


def make_job(label, count):
    nodeset = model.NodeSet()
    for i in range(count):
        nodeset.addNode(model.Node(["node%d" % i], label))
    return types.SimpleNamespace(nodeset=nodeset, uuid=uuid.uuid4().hex,
                                 name="compat-job")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("hosts")
    parser.add_argument("ca")
    parser.add_argument("cert")
    parser.add_argument("key")
    parser.add_argument("--label", required=True)
    parser.add_argument("--requests", type=int, default=1)
    parser.add_argument("--nodes-per-request", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    # The scheduler sets up tracing once; requestNodes needs it.
    zuul.lib.tracing.Tracing(configparser.ConfigParser())
    client = ZooKeeperClient(args.hosts, tls_ca=args.ca, tls_cert=args.cert,
                             tls_key=args.key, timeout=10.0)
    client.connect()
    nodepool = Nodepool(client, "compat-zuul", None)

    pending = []
    for i in range(args.requests):
        job = make_job(args.label, args.nodes_per_request)
        req = nodepool.requestNodes(uuid.uuid4().hex, job, "tenant",
                                    "check", None, "100", i)
        pending.append((req, job))

    errors = []
    results = []
    deadline = time.monotonic() + args.timeout
    while pending and time.monotonic() < deadline:
        still = []
        for req, job in pending:
            current = nodepool.zk_nodepool.getNodeRequest(req.id)
            if current is None:
                errors.append("request %s vanished" % req.id)
                continue
            if current.state not in (model.STATE_FULFILLED,
                                     model.STATE_FAILED):
                still.append((req, job))
                continue
            result = {"id": req.id, "state": current.state,
                      "nodes": list(current.nodes), "in_use": []}
            results.append(result)
            if current.state != model.STATE_FULFILLED:
                errors.append("request %s failed" % req.id)
                nodepool.deleteNodeRequest(req.id)
                continue
            try:
                nodepool.acceptNodes(current, job.nodeset)
            except Exception as e:
                errors.append("accepting %s: %s" % (req.id, e))
                continue
            nodepool.useNodeSet(job.nodeset, "tenant", "project")
            for node in job.nodeset.getNodes():
                fresh = model.Node(node.name, node.label)
                nodepool.zk_nodepool.updateNode(fresh, node.id)
                result["in_use"].append(fresh.state)
            nodepool.returnNodeSet(job.nodeset, None, "tenant", "project", 1)
        pending = still
        if pending:
            time.sleep(0.1)
    for req, _ in pending:
        errors.append("request %s not finished after %ss"
                      % (req.id, args.timeout))
        results.append({"id": req.id, "state": "timeout", "nodes": [],
                        "in_use": []})
    print(json.dumps({"requests": results, "errors": errors}), flush=True)
    client.disconnect()


if __name__ == "__main__":
    main()
