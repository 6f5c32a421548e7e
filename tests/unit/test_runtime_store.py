"""The transactional runtime's local store: committed rows plus their checkpoint, a batch overlay on top."""

from __future__ import annotations

from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.runtime.store import Overlay, PartitionStore


def test_a_new_store_has_no_checkpoint_and_no_rows(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "route-0")
    assert store.checkpoint is None
    assert list(store.items()) == []


def test_rows_and_checkpoint_are_applied_together_and_survive_a_reopen(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "route-0")
    store.apply({"ledger|a|L1": orjson.dumps({"rep_id": "r1"}), "loads|a|r1": orjson.dumps({"open": 1})}, 41)
    store.close()
    again = PartitionStore(tmp_path / "route-0")
    assert again.checkpoint == 41
    assert again.get("ledger|a|L1") == {"rep_id": "r1"}
    assert [k for k, _ in again.items("loads|")] == ["loads|a|r1"]


def test_a_tombstone_deletes_and_the_checkpoint_moves_on(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "s")
    store.apply({"k": b"1"}, 3)
    store.apply({"k": None}, 7)
    assert store.get("k") is None and store.checkpoint == 7


def test_the_overlay_reads_its_own_writes_first_and_commits_each_key_once(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "s")
    store.apply({"ledger|a|1": b"{}", "ledger|a|2": b"{}", "loads|a|r": b"{}"}, 1)
    batch = Overlay(store)
    batch.set("ledger|a|3", {"n": 1})
    batch.set("ledger|a|3", {"n": 2})  # the last value is the one committed
    batch.delete("ledger|a|1")
    assert batch.get("ledger|a|1") is None
    assert batch.get("ledger|a|3") == {"n": 2}
    assert store.get("ledger|a|3") is None, "nothing reaches the store before the commit"
    assert sorted(k for k, _ in batch.items("ledger|")) == ["ledger|a|2", "ledger|a|3"]
    assert batch.changes() == {"ledger|a|3": b'{"n":2}', "ledger|a|1": None}


def test_wipe_starts_over(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "s")
    store.apply({"k": b"1"}, 9)
    store.wipe()
    assert store.checkpoint is None and store.get("k") is None


ROWS = st.dictionaries(
    st.sampled_from(["a", "b", "c", "d|x", "d|y"]), st.one_of(st.none(), st.integers(-(2**31), 2**31)), max_size=5
)


@settings(max_examples=60, deadline=None)
@given(st.lists(ROWS, min_size=1, max_size=6))
def test_the_store_equals_the_newest_committed_value_per_key(tmp_path_factory, batches) -> None:  # type: ignore[no-untyped-def]
    """Replaying committed batches through overlays gives the same rows as a dict would (property)."""
    store = PartitionStore(tmp_path_factory.mktemp("p") / "s")
    model: dict[str, int] = {}
    for offset, rows in enumerate(batches):
        overlay = Overlay(store)
        for key, value in rows.items():
            if value is None:
                overlay.delete(key)
                model.pop(key, None)
            else:
                overlay.set(key, value)
                model[key] = value
        assert dict(overlay.items()) == model
        store.apply(overlay.changes(), offset)
    assert dict(store.items()) == model
    assert store.checkpoint == len(batches) - 1


def test_a_sweep_walks_one_kind_of_row_in_bounded_steps_and_wraps_around(tmp_path: Path) -> None:
    from streams.runtime.context import View

    store = PartitionStore(tmp_path / "s")
    store.apply({f"ledger|p|L{i}": b"{}" for i in range(7)} | {"loads|p|r": b"{}", "models|p|r": b"{}"}, 1)
    batch = Overlay(store)
    batch.set("ledger|p|L9", {"new": True})  # the batch's own rows count too
    view = View(batch, "ledger")
    seen, cursor, steps = [], None, 0
    while True:
        rows, cursor = view.scan(cursor, 3)
        seen += [k for k, _ in rows]
        steps += 1
        if cursor is None:
            break
    assert seen == [f"p|L{i}" for i in (0, 1, 2, 3, 4, 5, 6, 9)]
    assert steps == 3
    # sweep(): the same walk, carrying on where the last step stopped and starting over after the end
    swept = [[k for k, _ in view.sweep(3)] for _ in range(4)]
    assert swept == [["p|L0", "p|L1", "p|L2"], ["p|L3", "p|L4", "p|L5"], ["p|L6", "p|L9"], ["p|L0", "p|L1", "p|L2"]]
    assert [k for k, _ in view.scan(None, 2)[0]] == ["p|L0", "p|L1"], "the next sweep starts over"


def test_rollback_undoes_the_writes_since_the_mark_and_nothing_before(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "s")
    store.apply({"k": b"1"}, 1)
    batch = Overlay(store)
    batch.set("a", 1)
    batch.mark()
    batch.set("a", 2)
    batch.delete("k")
    batch.set("b", 3)
    batch.rollback()
    assert batch.get("a") == 1 and batch.get("k") == 1 and batch.get("b") is None
    assert batch.changes() == {"a": b"1"}


def test_a_store_knows_how_old_its_rows_are_and_can_be_destroyed(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "s")
    assert store.age_seconds() == 0.0
    store.apply({"k": b"1"}, 1)
    assert 0.0 <= store.age_seconds() < 5
    assert list(store.items()) == [("k", 1)], "bookkeeping keys are not rows"
    store.destroy()
    assert not (tmp_path / "s").exists()


def test_ordered_reads_committed_rows_and_the_batchs_writes_in_one_key_order(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path / "s")
    store.apply({"wait|p|2": b"2", "wait|p|4": b"4", "wait|p|6": b"6", "wait|q|1": b"1"}, 1)
    batch = Overlay(store)
    batch.set("wait|p|5", 5)
    batch.set("wait|p|1", 1)
    batch.set("wait|p|4", 44)  # rewritten in the batch
    batch.delete("wait|p|2")
    assert batch.ordered("wait|p|", 10) == [("wait|p|1", 1), ("wait|p|4", 44), ("wait|p|5", 5), ("wait|p|6", 6)]
    assert batch.ordered("wait|p|", 2) == [("wait|p|1", 1), ("wait|p|4", 44)]
    assert batch.ordered("wait|r|", 5) == []
