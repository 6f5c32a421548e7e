"""Report.problems drives ok, the CLI listing and the chaos tables: every check must be in it."""

from __future__ import annotations

import pytest

from streams.tools.verify import Report


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
