"""Report.problems drives ok, the CLI listing and the chaos tables: every check must be in it."""

from __future__ import annotations

import pytest

from streams.verify import Report


def test_a_clean_report_has_no_problems() -> None:
    assert Report().problems() == {} and Report().ok


@pytest.mark.parametrize("name", Report.PROBLEMS)
def test_each_failed_check_is_a_problem(name: str) -> None:
    report = Report(**{name: ["x"]})
    assert report.problems() == {name: ["x"]}
    assert not report.ok
    assert "FAIL" in report.table()


def test_every_list_field_is_a_checked_problem() -> None:
    lists = {name for name, f in Report.__dataclass_fields__.items() if "list" in str(f.type)}
    assert lists == set(Report.PROBLEMS)


def test_state_is_read_from_changelogs_the_way_recovery_builds_it() -> None:
    """A late row of an evicted worker's generation is skipped, as StampedTable's recovery skips it;
    rows without a stamp keep plain offset order."""
    from types import SimpleNamespace

    from streams.tables import STAMP_HEADER
    from streams.verify import _newest

    def rec(key: str, value: bytes | None, offset: int, stamp: str | None, partition: int = 0) -> SimpleNamespace:
        headers = [(STAMP_HEADER, stamp.encode())] if stamp else []
        return SimpleNamespace(
            key=f'"{key}"'.encode(), value=value, offset=offset, partition=partition, timestamp=offset, headers=headers
        )

    log = [
        rec("p|r", b'{"open":17}', 60, "7:1"),
        rec("p|r", b'{"open":18}', 70, "8:1"),
        rec("p|r", b'{"open":11}', 72, "7:2"),  # the zombie's late flush
        rec("p|t", b'{"open":4}', 73, "7:3"),  # late too, but its key has no newer row (compacted): kept
        rec("p|s", b'{"open":1}', 3, None, partition=1),
        rec("p|s", b'{"open":2}', 4, None, partition=1),
    ]
    assert _newest(list(reversed(log))) == {"p|r": b'{"open":18}', "p|s": b'{"open":2}', "p|t": b'{"open":4}'}
