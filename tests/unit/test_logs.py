"""streams.web.logs: one JSON object per line, context keys from extra/bind/the Faust event, no contact data."""

from __future__ import annotations

import io
import logging
import logging.config
import weakref
from collections.abc import Iterator
from types import SimpleNamespace

import orjson
import pytest
from aiokafka.errors import GroupCoordinatorNotAvailableError, NodeNotReadyError
from faust.streams import _current_event
from pydantic import ValidationError

from schemas.events import LeadCreated
from streams.web import logs
from streams.web.logs import JsonFormatter, bind, redact, worker_logging

EMAIL = "jane.roe+leads@example.com"
PHONE = "+49 30 1234 5678"


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("leadrelay.test-logs")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.handlers[:] = []


class FakeEvent:
    """Stands in for faust.Event: the formatter reads only .message (Faust keeps a weakref to it)."""

    def __init__(self, message: SimpleNamespace) -> None:
        self.message = message


def lines(stream: io.StringIO) -> list[dict]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_line_with_context_keys(capture) -> None:
    log, out = capture
    log.info(
        "decided %s",
        "L1",
        extra={"lead_id": "L1", "pool": "dach", "topic": "leads.new", "partition": 2, "offset": 41, "reason": "x"},
    )
    log.warning("second")
    first, second = lines(out)
    assert first["msg"] == "decided L1" and first["level"] == "info" and first["logger"] == "leadrelay.test-logs"
    assert (first["lead_id"], first["pool"], first["topic"], first["partition"], first["offset"]) == (
        "L1",
        "dach",
        "leads.new",
        2,
        41,
    )
    assert first["ts"].endswith("+00:00")
    assert set(second) == {"ts", "level", "logger", "msg"}


def test_only_allowlisted_keys_are_copied(capture) -> None:
    log, out = capture
    log.info("lead", extra={"lead_id": "L1", "contact": {"email": EMAIL}, "email": EMAIL, "full_name": "Jane Roe"})
    [line] = lines(out)
    assert line["lead_id"] == "L1"
    assert not {"contact", "email", "full_name"} & set(line)
    assert "example.com" not in out.getvalue() and "Jane" not in out.getvalue()


def test_bind_adds_lead_and_pool_in_the_block_only(capture) -> None:
    log, out = capture
    with bind(lead_id="L7", pool="emea", email=EMAIL):
        log.info("inside")
        with bind(rep_id="anna"):
            log.info("nested")
        log.info("explicit wins", extra={"pool": "dach"})
    log.info("outside")
    inside, nested, explicit, outside = lines(out)
    assert (inside["lead_id"], inside["pool"]) == ("L7", "emea") and "email" not in inside
    assert (nested["lead_id"], nested["rep_id"]) == ("L7", "anna")
    assert explicit["pool"] == "dach"
    assert "lead_id" not in outside and "pool" not in outside


def test_topic_partition_offset_come_from_the_current_faust_event(capture) -> None:
    log, out = capture
    event = FakeEvent(SimpleNamespace(topic="lr-pool-events", partition=3, offset=1234))
    token = _current_event.set(weakref.ref(event))
    try:
        log.info("handling")
        log.info("dead-lettered", extra={"topic": "leads.new", "partition": 0, "offset": 9})
    finally:
        _current_event.reset(token)
    log.info("no event")
    handling, explicit, none = lines(out)
    assert (handling["topic"], handling["partition"], handling["offset"]) == ("lr-pool-events", 3, 1234)
    assert (explicit["topic"], explicit["partition"], explicit["offset"]) == ("leads.new", 0, 9)
    assert "topic" not in none


def test_contact_data_in_messages_and_traces_is_masked(capture) -> None:
    log, out = capture
    log.warning("bad lead from %s, call %s", EMAIL, PHONE)
    with pytest.raises(ValidationError) as info:
        LeadCreated.model_validate(
            {"lead_id": "L1", "created_at": "2026-11-02T09:00:00Z", "contact": {"email": "x" * 300 + EMAIL}}
        )
    try:
        raise RuntimeError("wrapped") from info.value
    except RuntimeError:
        log.exception("unexpected error")
    text = out.getvalue()
    assert "example.com" not in text and "1234 5678" not in text and "xxxxxxxx" not in text
    warning, error = lines(out)
    assert warning["msg"] == "bad lead from <redacted-email>, call <redacted-phone>"
    assert error["error"] == "RuntimeError" and "input_value=<redacted>" in error["trace"]
    assert "contact.email" in error["trace"]  # the field name stays: that is what an operator needs


def test_redaction_leaves_ids_times_and_offsets_alone() -> None:
    text = "lead L-00042 at 2026-11-02 09:00:00+00:00 offset 123456789 partition 3 rep anna.b"
    assert redact(text) == text
    assert redact("lead jane@example.com") == "lead <redacted-email>"


def test_worker_logging_config_emits_json(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logging.config.dictConfig(worker_logging("info"))
        logging.getLogger("leadrelay.worker").info("started", extra={"agent": "route"})
        logging.getLogger("faust").info("chatty")  # Faust/aiokafka/mode are kept at WARNING
        err = capsys.readouterr().err.strip().splitlines()
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    assert len(err) == 1
    line = orjson.loads(err[0])
    assert line["msg"] == "started" and line["agent"] == "route"


def test_context_keys_contain_no_contact_field() -> None:
    assert not {"email", "phone", "name", "contact"} & set(logs.CONTEXT_KEYS)


def _coordinator_lines(records: list[logging.LogRecord], capsys: pytest.CaptureFixture[str]) -> list[dict]:
    """Feed aiokafka records through the worker's logging config; the JSON lines it writes."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logging.config.dictConfig(worker_logging("info"))
        for record in records:
            logging.getLogger(record.name).handle(record)
        return [orjson.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def _aiokafka_error(msg: str, err: Exception, created: float) -> logging.LogRecord:
    record = logging.LogRecord("aiokafka.consumer.group_coordinator", logging.ERROR, "", 0, msg, (err,), None)
    record.created = created
    return record


def test_coordinator_not_available_at_start_is_a_warning_but_a_persistent_one_an_error(capsys) -> None:
    """aiokafka logs ERROR while a fresh broker creates __consumer_offsets, and retries: not an alert."""
    grace = logs.TransientCoordinatorFilter.GRACE_SECONDS
    msg = "Group Coordinator Request failed: %s"
    t0 = 1_000_000.0
    lines = _coordinator_lines(
        [
            _aiokafka_error(msg, GroupCoordinatorNotAvailableError(), t0),
            _aiokafka_error(msg, GroupCoordinatorNotAvailableError(), t0 + 0.1),
            _aiokafka_error(msg, NodeNotReadyError("not ready"), t0 + 0.2),  # another error class stays
            *(_aiokafka_error(msg, GroupCoordinatorNotAvailableError(), t0 + t) for t in range(1, int(grace) + 5)),
        ],
        capsys,
    )
    levels = [(line["level"], "GroupCoordinatorNotAvailable" in line["msg"]) for line in lines]
    assert levels[:3] == [("warning", True), ("warning", True), ("error", False)]
    assert {level for level, _ in levels[3 : 3 + int(grace)]} == {"warning"}
    assert levels[-1] == ("error", True), "a coordinator that stays away past the grace period is an error"


def test_a_new_streak_after_a_gap_is_transient_again(capsys) -> None:
    gap = logs.TransientCoordinatorFilter.STREAK_GAP_SECONDS
    grace = logs.TransientCoordinatorFilter.GRACE_SECONDS
    msg = "Group Coordinator Request failed: %s"
    step = gap / 2  # close enough together to be one streak
    times = [0.0, step, 2 * step + gap + 1]  # the coordinator was found in the gap: a new streak
    times += [times[-1] + step * k for k in range(1, int(grace / step) + 2)]  # this one outlasts the grace
    lines = _coordinator_lines([_aiokafka_error(msg, GroupCoordinatorNotAvailableError(), t) for t in times], capsys)
    assert [line["level"] for line in lines] == ["warning"] * (len(times) - 1) + ["error"]


@pytest.mark.parametrize("level", ["warning", "error"])
def test_the_worker_keeps_its_log_level_at_warning_and_above(level: str) -> None:
    """Faust's Worker turns a terminal spinner on at WARNING and above, and the spinner sets the root
    logger to DEBUG: every debug() call in the process would then build a record the handler drops."""
    import faust

    from streams.runtime.worker import faust_worker
    from streams.settings import Settings

    root = logging.getLogger()
    before = (root.level, list(root.handlers))
    worker = faust_worker(faust.App("log-level-test", autodiscover=False), Settings(log_level=level))
    try:
        worker.on_setup_root_logger(root, logging.getLevelName(level.upper()))  # the hook the spinner used
        assert worker.spinner is None
        assert root.level == before[0]
        assert root.handlers == before[1]
    finally:
        root.setLevel(before[0])
        root.handlers[:] = before[1]
