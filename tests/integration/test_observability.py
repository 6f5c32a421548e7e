"""Operating a real worker: health endpoints, /metrics content, promtool on the live exposition, JSON logs
without contact data, and a real Prometheus (Debian's package) scraping it and answering PromQL.

One worker and one traffic run are shared by the module (`observed`) to keep the runtime small.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from schemas.events import AssignmentDecision, Contact, DealClosed, LeadCreated, RepUpdated
from streams.kafka.clients import partitions_of
from streams.tools.supervise import WorkerProcess, free_port
from streams.web.health import FAUST_LINT_FINDINGS, FAUST_PREFIX
from tests.deploy.observability import ALERTS, alert_rules, dashboard_exprs, metric_names, promtool_lint, tool
from tests.integration.conftest import Deployment

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
POOLS = ("dach", "emea")
EMAIL_DOMAIN = "contact-example.com"
PHONE = "+1 555 0199 777"
N_LEADS = 40
N_LATE = 8  # sent once Prometheus scrapes, so it sees the counter move
BAD = [
    (b"bad-1", b"not json at all"),
    (b"bad-2", orjson.dumps({"created_at": T0.isoformat()})),  # lead_id missing
    (b"bad-3", orjson.dumps({"lead_id": "B3", "created_at": T0.isoformat(), "estimated_value": "lots"})),
]


def roster() -> list[RepUpdated]:
    reps = [RepUpdated(rep_id=f"{pool}-r{j}", pools=[pool], capacity=4 + j) for pool in POOLS for j in range(3)]
    reps.append(RepUpdated(rep_id="gone", pools=["emea"], capacity=50, active=False))
    return reps


def lead(n: int) -> LeadCreated:
    return LeadCreated(
        lead_id=f"OBS{n:04d}",
        created_at=T0 + timedelta(seconds=n),
        pool=POOLS[n % 2],
        estimated_value=1000.0 + n,
        contact=Contact(name="Jane Roe", email=f"jane{n}@{EMAIL_DOMAIN}", phone=PHONE),
    )


# --- HTTP helpers --------------------------------------------------------------------------------


def get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60.0, every: float = 0.5) -> Any:
    """Poll `check` until it returns something truthy; fail the test with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (AssertionError, OSError, KeyError, ValueError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


@dataclass
class Scrape:
    text: str
    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Scrape:
        out = cls(text)
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out.samples.setdefault(s.name, []).append((s.labels, s.value))
        return out

    def total(self, name: str, **labels: str) -> float:
        return sum(v for lab, v in self.samples.get(name, []) if labels.items() <= lab.items())

    def by(self, name: str, label: str) -> dict[str, float]:
        out: Counter[str] = Counter()
        for lab, v in self.samples.get(name, []):
            out[lab[label]] += v
        return dict(out)


@dataclass
class Observed:
    dep: Deployment
    worker: WorkerProcess
    timeline: list[tuple[float, int, int, dict[str, Any]]]
    decisions: list[AssignmentDecision]
    deals: list[DealClosed]
    reps: list[RepUpdated]

    def scrape(self) -> Scrape:
        status, body = get(f"http://127.0.0.1:{self.worker.web_port}/metrics")
        assert status == 200
        return Scrape.parse(body.decode())

    def scrape_until(self, what: str, check: Callable[[Scrape], bool], timeout: float = 45.0) -> Scrape:
        def attempt() -> Scrape | None:
            scrape = self.scrape()
            return scrape if check(scrape) else None

        return wait_until(what, attempt, timeout=timeout)  # type: ignore[no-any-return]


def start_and_watch(dep: Deployment, name: str = "w1") -> tuple[WorkerProcess, list[tuple[float, int, int, dict]]]:
    """Start a worker like Deployment.worker() does, recording /healthz and /readyz from the first answer."""
    env = {
        **dep.env,
        "LEADRELAY_DATA_DIR": str(dep.root / name / "tables"),
        "LEADRELAY_WEB_PORT": str(free_port()),
    }
    worker = WorkerProcess(env, dep.root / name / "worker.log")
    dep.workers.append(worker)
    worker.start()
    base = f"http://127.0.0.1:{worker.web_port}"
    timeline: list[tuple[float, int, int, dict]] = []
    started = time.monotonic()
    while time.monotonic() - started < 90:
        assert worker.alive(), f"worker exited:\n{worker.tail()}"
        try:
            health, _ = get(f"{base}/healthz", timeout=2)
            ready, body = get(f"{base}/readyz", timeout=2)
        except OSError:
            time.sleep(0.05)
            continue
        timeline.append((time.monotonic() - started, health, ready, json.loads(body)))
        if ready == 200:
            return worker, timeline
        time.sleep(0.05)
    raise AssertionError(f"worker not ready after 90s:\n{worker.tail()}")


@pytest.fixture(scope="module")
def observed(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    dep = Deployment(kafka_bootstrap, tmp_path_factory.mktemp("observability"))
    try:
        worker, timeline = start_and_watch(dep)
        reps = roster()
        dep.send_roster(reps)
        dep.settle(2)
        dep.send(dep.settings.topic_leads_new, BAD)
        dep.send_leads(lead(i) for i in range(N_LEADS))
        decisions = dep.decisions(at_least=N_LEADS)
        dep.send_leads([lead(0)])  # a redelivery: re-emitted, counted as a duplicate, not a decision
        dep.decisions(at_least=N_LEADS + 1)
        assigned = [d for d in decisions if d.rep_id][:10]
        deals = [
            DealClosed(
                lead_id=d.lead_id,
                outcome="won" if i % 3 else "lost",
                amount=100.0 * i,
                closed_at=T0 + timedelta(hours=1),
                pool=d.pool if i % 2 else None,  # half go through the lead index
            )
            for i, d in enumerate(assigned)
        ]
        dep.send_deals(deals)
        yield Observed(dep, worker, timeline, decisions, deals, reps)
    finally:
        dep.stop()


# --- health --------------------------------------------------------------------------------------


def test_ready_only_after_table_recovery_and_live_throughout(observed: Observed) -> None:
    timeline = observed.timeline
    first_ready = next(i for i, (_, _, ready, _) in enumerate(timeline) if ready == 200)
    # The web server answers before the consumer group is joined and the tables recovered...
    assert first_ready > 0, f"never saw the worker unready: {timeline[:3]}"
    for _, health, ready, body in timeline[:first_ready]:
        assert health == 200, "liveness must not depend on recovery"
        assert ready == 503 and body["ready"] is False
        assert body["recovered"] is False or body["rebalancing"] is True
    # ...and is ready once they are.
    assert timeline[first_ready][3] == {"ready": True, "recovered": True, "rebalancing": False, "in_group": True}
    base = f"http://127.0.0.1:{observed.worker.web_port}"
    assert get(f"{base}/healthz") == (200, b'{"status":"ok"}')
    status, body = get(f"{base}/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    assert observed.scrape().total("leadrelay_worker_ready") == 1


def test_faust_views_that_expose_state_are_not_served(observed: Observed) -> None:
    base = f"http://127.0.0.1:{observed.worker.web_port}"
    hidden = ("/table/", "/table/route/", "/table/route/ledger/", "/router/", "/router/topics", "/graph/", "/stats/")
    for path in hidden:
        status, body = get(f"{base}{path}")
        assert status == 404, f"{path} answered {status}: {body[:200]!r}"


# --- /metrics ------------------------------------------------------------------------------------


def test_metrics_count_what_the_worker_did(observed: Observed) -> None:
    dep, decisions = observed.dep, observed.decisions
    leads_topic = dep.settings.topic_leads_new
    scrape = observed.scrape_until(
        "dead letters and deals to be counted",
        lambda s: (
            s.total("leadrelay_dead_letters_total") >= len(BAD)
            and s.total("leadrelay_deals_total") >= len(observed.deals)
            and s.total("leadrelay_duplicate_leads_total") >= 1
        ),
    )
    # decisions by pool, reason, strategy/variant: exactly what reached leads.assignments
    assert scrape.total("leadrelay_decisions_total") == len(decisions) == N_LEADS
    assert scrape.by("leadrelay_decisions_total", "reason") == dict(Counter(d.reason for d in decisions))
    assert scrape.by("leadrelay_decisions_total", "pool") == dict(Counter(d.pool for d in decisions))
    assert scrape.by("leadrelay_decisions_total", "strategy") == dict(
        Counter(d.explanation.strategy for d in decisions)
    )
    assert scrape.by("leadrelay_decisions_total", "variant") == dict(Counter(d.variant or "" for d in decisions))
    assert scrape.by("leadrelay_duplicate_leads_total", "pool") == {lead(0).pool: 1}
    # lead-to-decision latency: one observation per decision
    assert scrape.total("leadrelay_decision_latency_seconds_count") == N_LEADS
    assert scrape.total("leadrelay_decision_latency_seconds_bucket", le="+Inf") == N_LEADS
    # DLQ by source and reason
    assert scrape.total("leadrelay_dead_letters_total", source=leads_topic, reason="invalid_json") == 1
    assert scrape.total("leadrelay_dead_letters_total", source=leads_topic, reason="schema_violation") == 2
    # closed deals by outcome and variant (conversion)
    assert scrape.total("leadrelay_deals_total") == len(observed.deals)
    assert scrape.by("leadrelay_deals_total", "outcome") == dict(Counter(d.outcome for d in observed.deals))
    assert scrape.total("leadrelay_internal_errors_total") == 0
    # Faust's sensors on the same page
    received = scrape.total("leadrelay_records_read_total", topic=leads_topic)
    assert received >= N_LEADS + len(BAD)
    assert scrape.total("leadrelay_build_info") == 1


def test_pool_gauges_match_the_decision_log(observed: Observed) -> None:
    decisions = {d.lead_id: d for d in observed.decisions}
    released = Counter(decisions[deal.lead_id].pool for deal in observed.deals if decisions[deal.lead_id].rep_id)
    assigned = Counter(d.pool for d in decisions.values() if d.rep_id)
    capacity = Counter()
    for rep in observed.reps:
        if rep.active:
            for pool in rep.pools:
                capacity[pool] += rep.capacity
    expected_open = {pool: float(assigned[pool] - released[pool]) for pool in POOLS}
    scrape = observed.scrape_until(
        "open leads to reflect the closed deals",
        lambda s: s.by("leadrelay_open_leads", "pool") == expected_open,
    )
    assert scrape.by("leadrelay_capacity_leads", "pool") == {pool: float(capacity[pool]) for pool in POOLS}


def test_policy_and_fairness_are_exported_per_pool(observed: Observed) -> None:
    scrape = observed.scrape()
    policies = {lab["pool"]: lab for lab, _ in scrape.samples.get("leadrelay_policy_info", [])}
    assert set(policies) == set(POOLS), "route must call ctx.metrics.set_policy(pool, ...)"
    for d in observed.decisions:
        assert policies[d.pool]["policy_id"] == d.policy_id
        assert policies[d.pool]["version"] == str(d.policy_version)
    fairness = scrape.by("leadrelay_fairness_gini_ratio", "pool")
    assert set(fairness) == set(POOLS), "route must call ctx.metrics.set_fairness(pool, gini)"
    assert all(0.0 <= g <= 1.0 for g in fairness.values())


def test_consumer_lag_per_assigned_partition_drains_to_zero(observed: Observed) -> None:
    dep = observed.dep
    leads_topic = dep.settings.topic_leads_new
    n_partitions = len(asyncio.run(partitions_of(dep.settings, leads_topic)))

    def lag_of(scrape: Scrape, topic: str) -> dict[str, float]:
        return {
            lab["partition"]: v
            for lab, v in scrape.samples.get("leadrelay_consumer_lag_records", [])
            if lab["topic"] == topic
        }

    # the lag timer runs every 10 s; one worker owns every partition
    scrape = observed.scrape_until(
        "a lag series per partition of leads.new, all drained",
        lambda s: len(lag_of(s, leads_topic)) == n_partitions and sum(lag_of(s, leads_topic).values()) == 0,
    )
    topics = {lab["topic"] for lab, _ in scrape.samples["leadrelay_consumer_lag_records"]}
    assert {leads_topic, dep.settings.topic_deals_closed, f"{dep.settings.app_id}-pool-events"} <= topics
    assert not any(t.endswith("-changelog") for t in topics), "changelog partitions are not consumer lag"
    assert scrape.total("leadrelay_consumer_lag_errors_total") == 0


def test_live_exposition_passes_promtool(observed: Observed) -> None:
    findings = promtool_lint(observed.scrape().text)
    ours = {metric: problem for metric, problem in findings.items() if not metric.startswith(FAUST_PREFIX)}
    assert ours == {}
    assert findings.keys() == FAUST_LINT_FINDINGS.keys()


def test_logs_are_json_with_record_context_and_no_contact_data(observed: Observed) -> None:
    text = observed.worker.log_path.read_text()
    assert EMAIL_DOMAIN not in text and "Jane" not in text and "555 0199" not in text
    lines = [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert lines, "no JSON log line"
    stray = [line for line in text.splitlines() if line.strip() and not line.startswith("{")]
    assert stray == [], f"non-JSON lines in the worker log: {stray[:5]}"
    for line in lines:
        assert {"ts", "level", "logger", "msg"} <= set(line)
    dead = [line for line in lines if line["logger"] == "leadrelay.dlq"]
    assert len(dead) >= len(BAD)
    for line in dead:
        assert line["topic"] == observed.dep.settings.topic_leads_new
        assert isinstance(line["partition"], int) and isinstance(line["offset"], int) and line["reason"]


# --- a real Prometheus ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prometheus(observed: Observed, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {"job_name": "leadrelay", "static_configs": [{"targets": [f"127.0.0.1:{observed.worker.web_port}"]}]}
        ],
    }
    (root / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = (root / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={root / 'prometheus.yml'}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until("Prometheus to be ready", lambda: proc.poll() is None and get(f"{base}/-/ready")[0] == 200, 30)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def query(base: str, promql: str) -> list[dict[str, Any]]:
    status, body = get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    answer = json.loads(body)
    assert status == 200 and answer["status"] == "success", f"{promql}: {answer}"
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def scalar(base: str, promql: str) -> float | None:
    result = query(base, promql)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_the_worker_and_promql_returns_the_decision_count(
    observed: Observed, prometheus: str
) -> None:
    wait_until("the worker target to be up", lambda: scalar(prometheus, 'up{job="leadrelay"}') == 1, 30)
    wait_until(
        "the decision count",
        lambda: scalar(prometheus, 'sum(leadrelay_decisions_total{job="leadrelay"})') == N_LEADS,
        30,
    )
    # more leads while Prometheus watches: the same query follows, and the rate sees them
    observed.dep.send_leads(lead(i) for i in range(N_LEADS, N_LEADS + N_LATE))
    wait_until(
        "the new decisions",
        lambda: scalar(prometheus, 'sum(leadrelay_decisions_total{job="leadrelay"})') == N_LEADS + N_LATE,
        45,
    )
    assert (scalar(prometheus, "sum(increase(leadrelay_decisions_total[1m]))") or 0) > 0
    dead = scalar(prometheus, 'sum(leadrelay_dead_letters_total{reason="schema_violation"})')
    assert dead == 2
    # The NoDecisions rule sees the real (namespaced) leads topic arriving, and stays quiet while decisions flow.
    no_decisions = next(r["expr"] for r in alert_rules() if r["alert"] == "LeadRelayNoDecisions")
    arriving = no_decisions.split("unless")[0]
    wait_until("leads.new traffic as the NoDecisions rule selects it", lambda: query(prometheus, arriving), 30)
    assert query(prometheus, no_decisions) == []


def test_alert_rules_load_and_evaluate_on_live_data(observed: Observed, prometheus: str) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        _, body = get(f"{prometheus}/api/v1/rules")
        rules = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
        done = all(r["lastEvaluation"] and not r["lastEvaluation"].startswith("0001") for r in rules)
        return rules if rules and done else None

    rules = wait_until("every rule to be evaluated", evaluated, 30)
    assert len(rules) == len(alert_rules())
    for rule in rules:
        assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
    firing = query(prometheus, 'ALERTS{alertstate="firing"}')
    assert firing == [], f"a healthy worker fires alerts: {firing}"


def test_every_dashboard_query_runs_on_live_data(observed: Observed, prometheus: str) -> None:
    wait_until("two scrapes", lambda: (scalar(prometheus, "count_over_time(up[1m])") or 0) >= 2, 30)
    empty = []
    for title, expr in dashboard_exprs():
        if not query(prometheus, expr) and not metric_names(expr) <= LIFECYCLE_SERIES:
            empty.append(title)
    # Empty is fine only where the worker has nothing to show yet (no per-rep series unless enabled).
    assert set(empty) <= {"Open leads per rep (top 20)", "Internal errors/s by agent"}, empty


# Series of the lead lifecycle (docs/lifecycle.md): this run's pools have no follow-up SLA, claims,
# waiting, availability hand-backs or dedupe, so they have nothing to show; their queries must still run
# (query() fails on a PromQL error), and tests/agents and tests/unit check that they are counted.
LIFECYCLE_SERIES = {
    "leadrelay_sla_reassignments_total",
    "leadrelay_hand_backs_total",
    "leadrelay_waiting_leads",
    "leadrelay_waiting_assigned_total",
    "leadrelay_waiting_timeouts_total",
    "leadrelay_claims_total",
    "leadrelay_activity_records_total",
    "leadrelay_contact_duplicates_total",
}
