"""The routing core must not pull in the streaming stack (Faust, Kafka client, metrics)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("faust", "aiokafka", "prometheus_client", "mode", "rocksdict")

SCRIPT = """
import json, sys
import routing.decide, routing.ledger, routing.territory, routing.performance
import routing.model, routing.policy, routing.ids, routing.dedupe
import schemas, schemas.events, schemas.internal
print(json.dumps(sorted(sys.modules)))
"""


def test_routing_core_imports_no_streaming_stack():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    modules = set(json.loads(out.stdout))
    assert "routing.decide" in modules  # the import really happened
    loaded = sorted(m for m in modules if m.split(".")[0] in HEAVY)
    assert loaded == []
    assert not any(m.startswith("streams") for m in modules)


def test_purity_check_detects_a_heavy_import():
    """Guard the guard: the same check does see prometheus_client when something imports it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    script = SCRIPT.replace("import routing.model", "import streams.web.metrics\nimport routing.model")
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    assert "prometheus_client" in json.loads(out.stdout)
