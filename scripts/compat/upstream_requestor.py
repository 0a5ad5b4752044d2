"""Upstream nodepool 11's own client code as a requestor, as its
tools/load-test.py drives a launcher.

Run with the Python of a venv holding nodepool==11.0.0:

    python upstream_requestor.py -c nodepool.yaml --label L --requests N \
        [--return-nodes] [--timeout SECONDS]

The configuration is read by upstream's own loader (launcher.NodePool), so
the file must be one upstream accepts; the ZooKeeper connection comes from
its zookeeper-servers (with chroot) and zookeeper-tls. The script stores N
requests for one node of label L each, waits until every request is
fulfilled or failed, and, with --return-nodes, does what a requestor does
with a fulfilled request: lock each node (checking allocated_to), set it
in-use, then used, unlock it, and delete the request. Without
--return-nodes the nodes and the fulfilled requests are left as they are
(the script keeps its session open until stdin closes, so the requests,
ephemeral to it, stay visible).

It prints one JSON object on stdout:
    {"requests": [{"id", "state", "nodes", "declined_by"}...],
     "nodes": {node id: node dict as read after allocation},
     "errors": [...]}
"""
import argparse
import json
import sys
import time

from nodepool import launcher
from nodepool.zk import ZooKeeperClient
from nodepool.zk import zookeeper as zk


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-c", dest="config", required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--requests", type=int, default=1)
    parser.add_argument("--return-nodes", action="store_true")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()

    pool = launcher.NodePool(None, args.config)
    config = pool.loadConfig()
    client = ZooKeeperClient(
        config.zookeeper_servers,
        tls_cert=config.zookeeper_tls_cert,
        tls_key=config.zookeeper_tls_key,
        tls_ca=config.zookeeper_tls_ca,
    )
    client.connect()
    store = zk.ZooKeeper(client, enable_cache=False)

    requests = []
    for _ in range(args.requests):
        req = zk.NodeRequest()
        req.state = zk.REQUESTED
        req.requestor = "NodePool:load-test"
        req.node_types.append(args.label)
        req.reuse = False
        store.storeNodeRequest(req)
        requests.append(req.id)

    errors = []
    finished = {}
    nodes = {}
    deadline = time.monotonic() + args.timeout
    while len(finished) < len(requests) and time.monotonic() < deadline:
        for rid in requests:
            if rid in finished:
                continue
            req = store.getNodeRequest(rid, cached=False)
            if req is None:
                errors.append("request %s vanished" % rid)
                finished[rid] = {"id": rid, "state": "vanished",
                                 "nodes": [], "declined_by": []}
                continue
            if req.state not in (zk.FULFILLED, zk.FAILED):
                continue
            finished[rid] = {"id": rid, "state": req.state,
                             "nodes": list(req.nodes),
                             "declined_by": list(req.declined_by)}
            if req.state != zk.FULFILLED:
                continue
            for node_id in req.nodes:
                node = store.getNode(node_id)
                if node is None:
                    errors.append("node %s of %s is missing" % (node_id, rid))
                    continue
                nodes[node_id] = node.toDict()
                if node.allocated_to != rid:
                    errors.append("node %s allocated to %s, not %s"
                                  % (node_id, node.allocated_to, rid))
                    continue
                if not args.return_nodes:
                    continue
                store.lockNode(node, blocking=True, timeout=30)
                node.state = zk.IN_USE
                store.storeNode(node)
                node.state = zk.USED
                store.storeNode(node)
                store.unlockNode(node)
            if args.return_nodes:
                store.deleteNodeRequest(req)
        time.sleep(0.1)
    for rid in requests:
        if rid not in finished:
            errors.append("request %s not finished after %ss"
                          % (rid, args.timeout))
    print(json.dumps({
        "requests": [finished.get(r, {"id": r, "state": "timeout",
                                      "nodes": [], "declined_by": []})
                     for r in requests],
        "nodes": nodes,
        "errors": errors,
    }), flush=True)
    if not args.return_nodes:
        # Keep the session (and with it the ephemeral requests) alive until
        # the caller closes stdin.
        sys.stdin.read()
    client.disconnect()


if __name__ == "__main__":
    main()
