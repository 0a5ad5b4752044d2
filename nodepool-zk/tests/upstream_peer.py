"""A peer speaking for upstream nodepool 11 in the interop tests.

Run with the Python of a venv holding nodepool==11.0.0:

    python upstream_peer.py HOSTS CA CERT KEY

HOSTS may carry a chroot ("127.0.0.1:2281/test-1"). The peer connects the
way nodepool's own CLI does (nodepool.zk.ZooKeeperClient with TLS, then
nodepool.zk.zookeeper.ZooKeeper) and answers one JSON command per stdin
line with one JSON line on stdout. Requests it stores are ephemeral to its
session, so it lives until "quit" or the end of stdin.
"""
import json
import sys

from nodepool import exceptions as npe
from nodepool.zk import ZooKeeperClient
from nodepool.zk import zookeeper as zk


def main():
    hosts, ca, cert, key = sys.argv[1:5]
    client = ZooKeeperClient(hosts, tls_cert=cert, tls_key=key, tls_ca=ca,
                             timeout=10.0)
    client.connect()
    store = zk.ZooKeeper(client, enable_cache=False)
    nodes = {}
    requests = {}

    def store_node(cmd):
        node = zk.Node()
        for k, v in cmd["node"].items():
            setattr(node, k, v)
        store.storeNode(node)
        return {"id": node.id}

    def get_node(cmd):
        node = store.getNode(cmd["id"])
        return {"node": node.toDict() if node else None,
                "id": node.id if node else None}

    def store_request(cmd):
        request = zk.NodeRequest()
        for k, v in cmd["request"].items():
            setattr(request, k, v)
        store.storeNodeRequest(request, priority=cmd.get("priority", "100"))
        requests[request.id] = request
        return {"id": request.id}

    def get_request(cmd):
        request = store.getNodeRequest(cmd["id"])
        return {"request": request.toDict() if request else None,
                "id": request.id if request else None}

    def lock_node(cmd):
        node = store.getNode(cmd["id"])
        try:
            store.lockNode(node, blocking=cmd.get("blocking", False),
                           timeout=cmd.get("timeout"),
                           identifier=cmd.get("identifier"))
        except (npe.ZKLockException, npe.TimeoutException):
            return {"locked": False}
        nodes[cmd["id"]] = node
        return {"locked": True}

    def unlock_node(cmd):
        store.unlockNode(nodes.pop(cmd["id"]))
        return {"unlocked": True}

    def node_lock_contenders(cmd):
        return {"contenders": store.getNodeLockContenders(zk.Node(cmd["id"]))}

    def lock_request(cmd):
        request = requests.get(cmd["id"]) or store.getNodeRequest(cmd["id"])
        try:
            store.lockNodeRequest(request, blocking=False)
        except (npe.ZKLockException, npe.TimeoutException):
            return {"locked": False}
        requests[cmd["id"]] = request
        return {"locked": True}

    def unlock_request(cmd):
        store.unlockNodeRequest(requests[cmd["id"]])
        return {"unlocked": True}

    ops = {
        "store_node": store_node,
        "get_node": get_node,
        "store_request": store_request,
        "get_request": get_request,
        "lock_node": lock_node,
        "unlock_node": unlock_node,
        "node_lock_contenders": node_lock_contenders,
        "lock_request": lock_request,
        "unlock_request": unlock_request,
    }
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        try:
            reply = ops[cmd["op"]](cmd)
        except Exception as e:  # reported to the test, which fails
            reply = {"error": "%s: %s" % (type(e).__name__, e)}
        print(json.dumps(reply), flush=True)
    client.disconnect()


if __name__ == "__main__":
    main()
