#!/usr/bin/env python3
"""Print the bytes Zuul 14 writes for a node request (stdout).

Run with the interpreter of a venv holding zuul==14.3.0; generate.py calls
it.  The bytes are what zuul/zk/nodepool.py ``submitNodeRequest`` stores:
``json.dumps(node_request.toDict()).encode('utf8')``.
"""

import configparser
import json
import random
import sys
from unittest import mock

from zuul import model
from zuul.lib import tracing

tracing.Tracing(configparser.ConfigParser())

with mock.patch("time.time", return_value=1700000002.75):
    request = model.NodeRequest(
        requestor="zuul-scheduler-1",
        build_set_uuid="4c2b0e6f9d1a4b8c8e7f6a5b4c3d2e1f",
        tenant_name="tenant-\u00e9",
        pipeline_name="check",
        job_uuid="9f8e7d6c5b4a39281706f5e4d3c2b1a0",
        job_name="tox-py311",
        labels=["ubuntu-jammy", "ubuntu-jammy"],
        provider="rax",
        relative_priority=2,
        event_id="0d9c8b7a6f5e4d3c",
    )
    request.created_time = 1700000002.5
    # Span ids come from the random module: seed it for stable output.
    random.seed(14)
    request.span_info = tracing.startSavedSpan(
        "RequestNodes", start_time=1700000002.5)

sys.stdout.buffer.write(json.dumps(request.toDict()).encode("utf8"))
