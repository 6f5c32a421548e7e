"""Duplicates in the pure core (routing/dedupe.py): normal forms, keyed hashes, the match and the merge,
and what a merged duplicate does to loads (routing/ledger.py, routing/lifecycle.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from routing import dedupe
from routing.ledger import OPEN, LedgerEntry, assign, close
from routing.lifecycle import touch
from routing.model import Load
from routing.policy import Dedupe, parse_policy
from schemas.events import Contact, LeadActivity
from schemas.internal import POOL_EVENT, LeadArrived
from tests.factories import NOW, apply, make_deal, make_lead, make_policy, make_rep, make_view

SECRET = b"s" * 32
POLICY = make_policy(dedupe={"keys": ["email", "phone", "domain"], "horizon": "30d"})
DEDUPE = POLICY.dedupe
assert DEDUPE is not None


# --- normal forms ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("Jane.Roe@Example.COM", "jane.roe@example.com"),
        ("  jane@example.com\t", "jane@example.com"),
        ("jane+crm@example.com", "jane+crm@example.com"),  # +tags kept: only some providers ignore them
        ("j.a.n.e@gmail.com", "j.a.n.e@gmail.com"),  # dots kept: merging two people is worse than a miss
        ("jane@example.com.", "jane@example.com"),
        ("jane", None),
        ("@example.com", None),
        ("jane@localhost", None),
        ("ja ne@example.com", None),
        ("", None),
        (None, None),
    ],
)
def test_email_normal_form(raw: str | None, normal: str | None) -> None:
    assert dedupe.normal_email(raw) == normal


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("+1 (555) 010-0100", "+15550100100"),
        ("+1-555-010-0100", "+15550100100"),
        ("0049 30 1234567", "+49301234567"),  # 00 is the international prefix
        ("030 1234567", "0301234567"),  # national spelling stays national: no country guessing
        ("555-01", None),  # under seven digits
        ("call me", None),
        ("+١٢٣٤٥٦٧٨", None),  # only ASCII digits count
        (None, None),
    ],
)
def test_phone_normal_form(raw: str | None, normal: str | None) -> None:
    assert dedupe.normal_phone(raw) == normal


@pytest.mark.parametrize(
    ("email", "domain"),
    [("jane@acme.io", "acme.io"), ("Jane@GMAIL.com", None), ("x@outlook.com", None), ("nope", None)],
)
def test_company_domain_skips_free_mail(email: str, domain: str | None) -> None:
    assert dedupe.company_domain(dedupe.normal_email(email)) == domain


def test_keys_per_kind_and_none_without_a_secret_or_contact() -> None:
    contact = Contact(email="Jane@Acme.io", phone="+1 555 010 0100")
    keys = dedupe.keys(contact, SECRET)
    assert set(keys) == {"email", "phone", "domain"}
    assert all(len(k) == dedupe.KEY_HEX and int(k, 16) >= 0 for k in keys.values())
    assert dedupe.keys(contact, None) == {} and dedupe.keys(contact, b"") == {}
    assert dedupe.keys(None, SECRET) == {}
    assert set(dedupe.keys(Contact(email="jane@gmail.com"), SECRET)) == {"email"}


def test_the_kind_is_part_of_the_message() -> None:
    """An e-mail `a@b.cd` and a domain that happened to read the same never share a key."""
    assert dedupe.digest(SECRET, "email", "x") != dedupe.digest(SECRET, "domain", "x")


emails = st.builds(
    lambda local, domain, pad: f"{pad}{local}@{domain}.com{pad}",
    st.from_regex(r"[a-z][a-z0-9.]{2,12}", fullmatch=True),
    st.from_regex(r"[a-z]{3,10}", fullmatch=True),
    st.sampled_from(["", " ", "\t"]),
)


@given(emails, st.randoms())
def test_equal_after_normalising_means_equal_key(email: str, rnd: Any) -> None:
    shouted = "".join(c.upper() if rnd.random() < 0.5 else c for c in email)
    assert dedupe.normal_email(shouted) == dedupe.normal_email(email)
    assert dedupe.keys(Contact(email=shouted), SECRET) == dedupe.keys(Contact(email=email), SECRET)


@given(emails, st.from_regex(r"\+?[0-9]{7,14}", fullmatch=True))
def test_the_raw_contact_never_appears_in_a_key(email: str, phone: str) -> None:
    keys = dedupe.keys(Contact(email=email, phone=phone), SECRET)
    text = " ".join(keys.values())
    for part in (email.strip(), phone, phone.lstrip("+"), email.strip().partition("@")[2]):
        assert part not in text
    assert all(len(k) == dedupe.KEY_HEX for k in keys.values())


@given(emails, st.binary(min_size=16, max_size=40), st.binary(min_size=16, max_size=40))
def test_another_secret_gives_another_key(email: str, one: bytes, other: bytes) -> None:
    if one != other:
        assert dedupe.keys(Contact(email=email), one)["email"] != dedupe.keys(Contact(email=email), other)["email"]


# --- the policy --------------------------------------------------------------------------------------


def test_dedupe_policy_defaults_and_refusals() -> None:
    assert parse_policy({"dedupe": {}}).dedupe == Dedupe(keys=["email", "phone"], horizon="30d")
    assert parse_policy({}).dedupe is None
    for bad in ({"keys": []}, {"keys": ["email", "email"]}, {"keys": ["name"]}, {"horizon": "1w"}):
        with pytest.raises(ValueError, match="dedupe"):
            parse_policy({"dedupe": bad})


# --- the match ---------------------------------------------------------------------------------------


def original(rep_id: str | None = "rep-a", status: str = OPEN, **fields: Any) -> LedgerEntry:
    return LedgerEntry(decision={"lead_id": "lead-1"}, status=status, rep_id=rep_id, **fields)


def stored(at: Any = NOW, lead_id: str = "lead-1") -> dict[str, Any]:
    return dedupe.row(lead_id, "rep-a", at)


FRAME_REPS = [make_rep(rep_id="rep-a"), make_rep(rep_id="rep-b")]


@pytest.mark.parametrize(
    ("row_at", "entry", "reps", "holder"),
    [
        (NOW - timedelta(days=29), original(), FRAME_REPS, "rep-a"),
        (NOW - timedelta(days=30), original(), FRAME_REPS, "rep-a"),  # the horizon's last instant counts
        (NOW - timedelta(days=30, seconds=1), original(), FRAME_REPS, None),  # past the horizon
        (NOW, original(status="won"), FRAME_REPS, None),  # the original closed
        (NOW, original(rep_id=None, status="claimable"), FRAME_REPS, None),  # nobody holds it
        (NOW, None, FRAME_REPS, None),  # its ledger entry expired
        (NOW, original(), [make_rep(rep_id="rep-b")], None),  # the holder left the pool
        (NOW, original(), [make_rep(rep_id="rep-a", availability="away")], None),
        (NOW, original(), [make_rep(rep_id="rep-a", active=False)], None),
        (NOW, original(rep_id="rep-b"), FRAME_REPS, "rep-b"),  # reassigned since: the current holder
        (NOW, original(duplicate_of={"lead_id": "x", "kind": "email"}), FRAME_REPS, None),
    ],
)
def test_find_the_holder(row_at: Any, entry: LedgerEntry | None, reps: list[Any], holder: str | None) -> None:
    match = dedupe.find([("email", stored(row_at), entry)], make_view(reps), DEDUPE, NOW)
    assert (match.rep_id if match else None) == holder
    if match:
        assert (match.kind, match.lead_id) == ("email", "lead-1")


def test_find_takes_the_first_kind_that_matches() -> None:
    frame = make_view(FRAME_REPS)
    closed, live = original(status="lost"), original(rep_id="rep-b")
    match = dedupe.find([("email", stored(), closed), ("phone", stored(lead_id="lead-0"), live)], frame, DEDUPE, NOW)
    assert match == dedupe.Match("phone", "lead-0", "rep-b", stored()["at"])


def test_no_dedupe_section_makes_every_row_stale() -> None:
    assert not dedupe.live(stored(), None, NOW)


# --- the merge ---------------------------------------------------------------------------------------


def merged(frame: Any = None) -> Any:
    frame = frame or make_view([make_rep(rep_id="rep-a", capacity=1)], {"rep-a": 1})
    match = dedupe.Match("email", "lead-1", "rep-a", "2024-06-01T11:00:00.000000Z")
    return dedupe.merge(make_lead(lead_id="lead-2"), frame, POLICY, match, now=NOW)


def test_a_duplicate_goes_to_the_holder_without_load_even_when_full() -> None:
    result = merged()
    d = result.decision
    assert (d.rep_id, d.reason, d.trigger, d.attempt, d.decided_at) == ("rep-a", "assigned", "duplicate_of", 1, NOW)
    assert (
        d.decision_id == assign(make_lead(lead_id="lead-2"), make_view([]), POLICY, None, now=NOW).decision.decision_id
    )
    assert "lead-1" in d.explanation.summary and "email" in d.explanation.summary
    assert result.load is None and result.state is None, "adds no load, moves no rotation"
    assert result.entry.duplicate_of == {"lead_id": "lead-1", "kind": "email"}
    assert result.entry.sla_due is None and not result.entry.holds_load
    assert LedgerEntry.from_dict(result.entry.to_dict()) == result.entry
    assert result == merged(), "deterministic in its inputs"


def test_a_deal_on_a_duplicate_credits_the_rep_and_releases_nothing() -> None:
    entry = merged().entry
    done = close(make_deal(lead_id="lead-2", outcome="won"), entry, Load(open=1), {}, now=NOW)
    assert done.released is None and done.credited == "rep-a" and done.entry is not None
    assert done.entry.status == "won"
    normal = replace(entry, duplicate_of=None)
    assert close(make_deal(lead_id="lead-2"), normal, Load(open=1), {}, now=NOW).released == ("rep-a", Load(open=0))


def test_closing_activity_on_a_duplicate_releases_nothing() -> None:
    act = LeadActivity(lead_id="lead-2", kind="disqualified", occurred_at=NOW)
    result = touch(act, merged().entry, Load(open=1), now=NOW)
    assert result.outcome == "closed" and result.released is None and result.stopped is None


def test_a_merged_duplicate_leaves_the_frame_alone() -> None:
    frame = make_view([make_rep(rep_id="rep-a", capacity=1)], {"rep-a": 1})
    apply(frame, merged(frame))
    assert frame.open[frame.index["rep-a"]] == 1


# --- the internal contract ---------------------------------------------------------------------------


def test_lead_arrived_leaves_out_empty_keys_so_older_workers_read_it() -> None:
    plain = LeadArrived(pool="p", lead=make_lead(), received_at=NOW)
    assert b"dedupe_keys" not in plain.model_dump_json().encode()
    keyed = plain.model_copy(update={"dedupe_keys": dedupe.keys(Contact(email="a@b.example"), SECRET)})
    assert POOL_EVENT.validate_json(keyed.model_dump_json()) == keyed
    with pytest.raises(ValueError, match="dedupe_keys"):
        LeadArrived.model_validate({**plain.model_dump(mode="json"), "dedupe_keys": {"email": "jane@b.example"}})


def test_a_duplicate_in_a_learning_pool_keeps_the_pools_half_life() -> None:
    learning = make_policy(dedupe={}, learning={"half_life_days": 45})
    match = dedupe.Match("email", "lead-1", "rep-a", "2024-06-01T11:00:00.000000Z")
    frame = make_view([make_rep(rep_id="rep-a")])
    assert dedupe.merge(make_lead(lead_id="lead-2"), frame, learning, match, now=NOW).entry.half_life == 45
