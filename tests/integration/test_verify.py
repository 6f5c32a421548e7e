"""The verifier on a real run: clean traffic passes I1-I5, and injected faults are caught."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.events import DealClosed, LeadCreated, RepUpdated
from streams.tools.verify import verify

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def lead(n: int) -> LeadCreated:
    return LeadCreated(lead_id=f"V{n:04d}", created_at=T0 + timedelta(seconds=n), pool=("a", "b")[n % 2])


def test_clean_run_passes_and_injected_faults_are_caught(deployment) -> None:
    dep = deployment
    dep.worker()
    dep.send_roster([RepUpdated(rep_id=f"r{i}", pools=["a", "b"], capacity=7) for i in range(3)])
    dep.settle(2)
    dep.send_leads(lead(n) for n in range(60))
    dep.send(dep.settings.topic_leads_new, [(b"junk", b"{oops"), (b"tomb", None)])
    decisions = dep.decisions(at_least=60)
    dep.send_deals(
        DealClosed(lead_id=d.lead_id, outcome="won", amount=10, closed_at=T0) for d in decisions[:10] if d.rep_id
    )
    dep.records(dep.settings.topic_dlq, at_least=2)
    dep.settle(5)

    report = verify(dep.settings)
    assert report.ok, report.table()
    assert (report.leads_in, report.valid_leads, report.dead_letters) == (62, 60, 2)
    assert report.checked_state and report.state_mismatches == []

    # Faults the verifier must see, injected with the worker stopped:
    dep.stop()
    forged = decisions[0].model_copy(update={"rep_id": "intruder"})  # a second owner for a decided lead
    stranger = lead(998)  # a lead "decided" for a rep the roster never had
    ghost_decision = decisions[1].model_copy(
        update={"lead_id": stranger.lead_id, "rep_id": "ghost", "pool": "a", "decision_id": "forged-1"}
    )
    dep.send_leads([stranger, lead(999)])  # V0999: nobody decides it
    dep.send(
        dep.settings.topic_assignments,
        [(d.lead_id.encode(), d.model_dump_json().encode()) for d in (forged, ghost_decision)],
    )
    dep.send(f"{dep.settings.app_id}-route-changelog", [(b"loads|a|r1", b'{"open": 99}')])  # state drifted from log
    bad = verify(dep.settings)
    assert not bad.ok
    assert [c.split(":")[0] for c in bad.conflicting_decisions] == [forged.lead_id]
    assert bad.lost_leads == ["V0999"]
    assert bad.unavailable_assignments == ["V0998 -> ghost"]
    assert {m.split(":")[0] for m in bad.state_mismatches} == {"a|r1", "a|ghost"}
    assert "FAIL" in bad.table()
