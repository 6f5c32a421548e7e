"""Core decision time for pools of 10 to 5,000 reps: the full example policy against plain least-loaded.

Both run in the same process on the same frames, so the ratio is meaningful on a noisy machine even
when the absolute numbers move. The timed call is ledger.assign (decision + new state), exactly what
the route agent calls per lead; applying the new state to the frame is done between timings.
"""

from __future__ import annotations

import gc
import random
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np

from routing import learning
from routing.frame import PoolFrame
from routing.ledger import assign
from routing.model import Load, PoolState, Rep
from routing.policy import DEFAULT_POLICY, Policy, parse_policy
from schemas.events import LeadCreated
from streams.tools import synthetic

FULL = Path(__file__).resolve().parent.parent / "deploy" / "policies" / "full.yaml"
SIZES = (10, 100, 1000, 5000)
NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)


def make_pool(n: int, seed: int = 1) -> PoolFrame:
    rng = random.Random(seed)
    reps, loads, buckets, models = {}, {}, {}, {}
    for i in range(n):
        rep_id = f"rep-{i:05d}"
        capacity = rng.randint(20, 60)
        tags = {t: rng.randint(1, 5) for t in rng.sample(["de", "en", "fr", "saas", "retail", "enterprise"], 3)}
        reps[rep_id] = Rep(
            rep_id,
            tier=rng.choice(["junior", "mid", "senior"]),
            tags=tags,
            capacity=capacity,
            weight=rng.choice([1.0, 1.0, 1.5]),
            availability="available" if rng.random() > 0.1 else "away",
            hired_at=date(2026, 11, 1) - timedelta(days=rng.randint(0, 2000)),
        )
        loads[rep_id] = Load(open=rng.randint(0, capacity // 2), vpass=rng.random() * 3)
        buckets[rep_id] = {
            (NOW.date() - timedelta(days=d)).isoformat(): [rng.randint(0, 2), rng.randint(0, 4), 1000.0 * d]
            for d in range(10)
        }
        model = None
        for _ in range(rng.randint(0, 30)):  # a learned history: outcomes of leads with random features
            feats = [f"industry={rng.choice(synthetic.INDUSTRIES)}", f"country={rng.choice(synthetic.COUNTRIES)}"]
            model = learning.update(model, feats, rng.random() < 0.3)
        if model is not None:
            models[rep_id] = model
    return PoolFrame("dach", reps, loads, buckets, models, PoolState(members=tuple(sorted(reps))))


def leads(count: int) -> list[LeadCreated]:
    stream = synthetic.leads(99, start=NOW)
    out = []
    for lead in stream:
        out.append(lead.model_copy(update={"pool": "dach", "language": "de" if len(out) % 3 else "en"}))
        if len(out) == count:
            return out
    return out


def run(frame: PoolFrame, policy: Policy, batch: list[LeadCreated]) -> np.ndarray:
    times = np.empty(len(batch))
    gc.disable()
    try:
        for k, lead in enumerate(batch):
            t0 = time.perf_counter_ns()
            result = assign(lead, frame, policy, None, now=NOW)
            times[k] = time.perf_counter_ns() - t0
            if result.load is not None and result.decision.rep_id is not None:
                frame.set_load(result.decision.rep_id, result.load)
            if result.state is not None:
                frame.set_state(result.state)
    finally:
        gc.enable()
    return times / 1e6  # ms


def main() -> None:
    full = parse_policy(FULL.read_text())
    batch = leads(2000)
    print("core decision time per lead (ms), ledger.assign incl. explanation; 2,000 leads per row")
    print(f"{'reps':>6} {'policy':<12} {'p50':>7} {'p99':>7} {'max':>7} {'leads/s':>9} {'p99 vs baseline':>16}")
    for n in SIZES:
        rows = {}
        for name, policy in (("baseline", DEFAULT_POLICY), ("full", full)):
            frame = make_pool(n)
            run(frame, policy, batch[:200])  # warm-up: caches, numpy paths
            times = run(make_pool(n), policy, batch)
            rows[name] = times
            ratio = np.percentile(times, 99) / np.percentile(rows["baseline"], 99)
            print(
                f"{n:>6} {name:<12} {np.percentile(times, 50):>7.3f} {np.percentile(times, 99):>7.3f} "
                f"{times.max():>7.3f} {1000 / times.mean():>9.0f} {ratio:>15.2f}x"
            )
    print("target: full policy p99 <= 1 ms at 1,000 reps")
