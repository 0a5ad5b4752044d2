#!/usr/bin/env python3
"""Where a benchmark run's ZooKeeper writes go, from the server's own
transaction log.

    scripts/bench/zk_writes.py ZK_DATA_DIR CHROOT=REQUESTS [CHROOT=REQUESTS ...]

ZK_DATA_DIR is the server's dataDir (scripts/zookeeper.sh start DIR puts it
in DIR/data). Each CHROOT is a run's chroot (nodepool-bench prints it in its
RESULT line as "chroot") and REQUESTS the requests fulfilled in it. The log
is dumped with ZooKeeper's own TxnLogToolkit; every transaction on a path
under the chroot is counted by operation and path pattern (ids replaced by
placeholders), and failed transactions ("error", e.g. a create that found
the znode there) are attributed to the chroot through their session. A
multi is one transaction: a committed one is shown with the patterns of
its operations' paths ("multi setData ... + create ..."), a failed one
(e.g. an admission counter moved meanwhile) as "multi (failed ...)", both
attributed through their session.
Prints, per chroot, the counts per request, largest first.
"""
import collections
import glob
import os
import re
import subprocess
import sys

JAVA_DIR = "/usr/share/java"
LINE = re.compile(r"session (0x[0-9a-f]+) cxid \S+ zxid \S+ (\w+)(?: (\S+))?")


def dump(data_dir):
    jars = [os.path.join(JAVA_DIR, j) for j in
            ("zookeeper.jar", "slf4j-log4j12.jar", "log4j-1.2.jar")]
    cp = ":".join(j for j in jars if os.path.exists(j))
    logs = sorted(glob.glob(os.path.join(data_dir, "version-2", "log.*")),
                  key=lambda p: int(p.rsplit(".", 1)[1], 16))
    for log in logs:
        out = subprocess.run(
            ["java", "-cp", cp,
             "org.apache.zookeeper.server.persistence.TxnLogToolkit", log],
            capture_output=True, text=True, check=True).stdout
        yield from out.splitlines()


def pattern(path):
    path = re.sub(r"/[0-9a-f]{32}__lock__\d+", "/<lock-contender>", path)
    path = re.sub(r"/\d{3}-\d{10}", "/<prio>-<seq>", path)
    path = re.sub(r"/\d{10}", "/<seq>", path)
    path = re.sub(r"(/components/\w+/)[^/]+", r"\1<name>", path)
    return path


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    data_dir = sys.argv[1]
    runs = {}
    for arg in sys.argv[2:]:
        chroot, _, n = arg.partition("=")
        runs[chroot.rstrip("/")] = int(n or 1)
    counts = {c: collections.Counter() for c in runs}
    session_of = {}
    errors = collections.Counter()
    multis = []
    for line in dump(data_dir):
        m = LINE.search(line)
        if not m:
            continue
        session, op, path = m.groups()
        if op == "multi":
            multis.append((session, line))
            continue
        path = (path or "").strip("'").split(",", 1)[0]
        if op == "error":
            errors[session] += 1
            continue
        if not path:
            continue
        for chroot in runs:
            if path == chroot or path.startswith(chroot + "/"):
                session_of.setdefault(session, chroot)
                counts[chroot][(op, pattern(path[len(chroot):]) or "/")] += 1
                break
    for session, line in multis:
        chroot = session_of.get(session)
        if not chroot:
            continue
        if "multi error:" in line:
            key = ("multi", "(failed: a version or check conflict)")
        else:
            ops = re.findall(r"(setData|create|delete|check):[^/]*?" + re.escape(chroot)
                             + r"(/[\w:./-]*)", line)
            key = ("multi", " + ".join(f"{o} {pattern(p)}" for o, p in ops) or "?")
        counts[chroot][key] += 1
    for session, n in errors.items():
        chroot = session_of.get(session)
        if chroot:
            counts[chroot][("error", "(failed write, e.g. node exists)")] += n
    for chroot, n in runs.items():
        total = sum(counts[chroot].values())
        print(f"\n{chroot}: {total} transactions, {total / n:.2f} per request "
              f"({n} requests)")
        for (op, path), k in counts[chroot].most_common():
            print(f"  {k / n:8.2f}  {op:<9} {path}")


if __name__ == "__main__":
    main()
