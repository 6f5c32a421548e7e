"""`leadrelay demo` end to end on the session broker: every lead decided, and `verify` passes on it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streams.tools.demo import run_demo

pytestmark = pytest.mark.integration


def test_demo_run_decides_every_lead_and_verify_passes(
    kafka_bootstrap: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The demo roster splits reps across pools with pool_capacity: verify must replay capacity the
    # way the worker applies it, or a healthy run fails I2/I3.
    rc = run_demo(seconds=12, rate=10, seed=7, bootstrap=kafka_bootstrap, state=tmp_path)
    out = capsys.readouterr().out
    assert "=== leadrelay verify" in out, out[-3000:]
    assert "FAIL" not in out, out[-3000:]
    assert rc == 0, out[-3000:]
    checked = re.search(r"I4 decisions checked in pool log\s+\|\s+(\d+)", out)
    assert checked and int(checked.group(1)) > 50, out[-3000:]
    assert re.search(r"I3 state != replay\s+\|\s+0 \| ok", out), out[-3000:]
