"""streams.tools.localkafka against a real broker: lifecycle, produce/consume, restart keeps data, CLI.

These tests start their own broker in a tmp dir and must fail (never skip) when it cannot start.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.tools import localkafka

pytestmark = pytest.mark.integration

TOPIC = "localkafka-smoke"


async def _produce(bootstrap: str, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(TOPIC, value)
    finally:
        await producer.stop()


async def _read_all(bootstrap: str, want: int, timeout: float = 30.0) -> list[bytes]:
    """Values in TOPIC from the beginning, once `want` of them arrived (or timeout)."""
    consumer = AIOKafkaConsumer(TOPIC, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout
        while len(values) < want and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            values += [msg.value for msgs in batches.values() for msg in msgs if msg.value is not None]
    finally:
        await consumer.stop()
    return values


def test_lifecycle_produce_consume_and_restart(tmp_path: Path) -> None:
    state = tmp_path / "kafka"
    handle = localkafka.start(state)
    try:
        assert handle.bootstrap.startswith("127.0.0.1:")
        assert handle.state_dir == state.resolve()
        assert localkafka.status(state) == handle
        assert localkafka.start(state) == handle, "start() must be idempotent while the broker runs"

        asyncio.run(_produce(handle.bootstrap, b"lead-1"))
        assert asyncio.run(_read_all(handle.bootstrap, want=1)) == [b"lead-1"]

        assert localkafka.stop(state) is True
        assert localkafka.status(state) is None
        assert localkafka.stop(state) is False

        restarted = localkafka.start(state, fresh=False)
        assert restarted.pid != handle.pid
        assert (restarted.bootstrap, restarted.data_dir) == (handle.bootstrap, handle.data_dir)
        assert asyncio.run(_read_all(handle.bootstrap, want=1)) == [b"lead-1"]

        # A crash (SIGKILL) loses nothing that was acknowledged with acks=all before it.
        asyncio.run(_produce(handle.bootstrap, b"lead-2"))
        assert localkafka.kill(state) is True
        assert localkafka.status(state) is None
        localkafka.start(state, fresh=False)
        assert asyncio.run(_read_all(handle.bootstrap, want=2)) == [b"lead-1", b"lead-2"]
    finally:
        localkafka.stop(state)
    assert localkafka.status(state) is None


def test_cli_start_status_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = str(tmp_path / "kafka")
    try:
        assert localkafka.main(["start", "--state-dir", state]) == 0
        bootstrap = capsys.readouterr().out.splitlines()[-1]
        assert bootstrap.startswith("127.0.0.1:")

        assert localkafka.main(["status", "--state-dir", state]) == 0
        assert capsys.readouterr().out.strip() == bootstrap
    finally:
        assert localkafka.main(["stop", "--state-dir", state]) == 0
    assert capsys.readouterr().out.strip() == "stopped"
    assert localkafka.main(["status", "--state-dir", state]) == 1
    assert capsys.readouterr().out.strip() == "not running"


def test_start_failure_reports_broker_log(tmp_path: Path) -> None:
    # A heap the JVM refuses makes the broker exit at once: start() must raise with the log tail.
    with pytest.raises(RuntimeError, match=r"exited during startup(.|\n)*heap"):
        localkafka.start(tmp_path / "kafka", heap="1k")
    assert localkafka.status(tmp_path / "kafka") is None
