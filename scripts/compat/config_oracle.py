"""Upstream nodepool 11's verdict on many configs, in one process.

Run with the Python of a venv that has nodepool==11.0.0. Reads one JSON
object a line on stdin, {"id": ..., "text": "..."}, and writes one a line on
stdout:

    {"id": ..., "validate": 0 | 1, "load": null | "ExceptionType: message"}

"validate" is what `nodepool config-validate` returns for the text
(ConfigValidator.validate), "load" what the launcher's and builder's loader
(nodepool.config.loadConfig) raised, or null when it loaded. Both read the
process environment for %(NODEPOOL_...) substitution, as upstream does.
Used by nodepool/tests/config_differential.rs.
"""

import json
import logging
import os
import sys
import tempfile

from nodepool.cmd.config_validator import ConfigValidator
from nodepool.config import loadConfig


def verdict(path):
    try:
        validate = ConfigValidator(path).validate()
    except Exception:  # the validator itself crashed: it rejects the file
        validate = 1
    try:
        loadConfig(path)
        load = None
    except Exception as e:  # noqa: BLE001 - every failure is a verdict
        load = "%s: %s" % (type(e).__name__, e)
    return validate, load


def main():
    logging.disable(logging.CRITICAL)
    workdir = tempfile.mkdtemp(prefix="nodepool-oracle-")
    path = os.path.join(workdir, "nodepool.yaml")
    for line in sys.stdin:
        if not line.strip():
            continue
        case = json.loads(line)
        with open(path, "w") as f:
            f.write(case["text"])
        validate, load = verdict(path)
        out = {"id": case["id"], "validate": validate, "load": load}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
    os.unlink(path) if os.path.exists(path) else None
    os.rmdir(workdir)


if __name__ == "__main__":
    main()
