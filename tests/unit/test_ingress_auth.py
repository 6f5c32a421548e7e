"""Request signatures: forged, tampered, unknown, old, future and replayed requests are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.ingress.auth import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AuthError,
    ReplayGuard,
    SourcesError,
    Verifier,
    load_sources,
    sign,
    signed_headers,
)

SECRET = b"s3cret-of-the-web-form-0123"
NOW = 1_750_000_000.0
BODY = b'{"lead_id":"l1","created_at":"2026-01-01T00:00:00Z"}'


def verifier(now: float = NOW, window: float = 300) -> Verifier:
    return Verifier({"webform": SECRET, "crm": b"another-secret-0123456"}, window, clock=lambda: now)


def refused(v: Verifier, headers: dict[str, str], body: bytes = BODY) -> str:
    with pytest.raises(AuthError) as raised:
        v.verify(headers, body)
    return raised.value.reason


def test_a_signed_request_is_accepted_and_names_its_source() -> None:
    headers = signed_headers("webform", SECRET, BODY, now=NOW - 10)
    source, signature = verifier().verify(headers, BODY)
    assert source == "webform" and signature == headers[SIGNATURE_HEADER]
    assert signature == "v1=" + __import__("hmac").new(SECRET, b"1749999990." + BODY, "sha256").hexdigest()


def test_a_forged_signature_is_refused() -> None:
    forged = signed_headers("webform", b"guessed-secret-000000", BODY, now=NOW)
    assert refused(verifier(), forged) == "bad_signature"


def test_another_sources_secret_does_not_pass_for_this_source() -> None:
    headers = signed_headers("webform", b"another-secret-0123456", BODY, now=NOW)
    assert refused(verifier(), headers) == "bad_signature"


def test_a_tampered_body_or_timestamp_is_refused() -> None:
    headers = signed_headers("webform", SECRET, BODY, now=NOW)
    assert refused(verifier(), headers, BODY.replace(b"l1", b"l2")) == "bad_signature"
    moved = {**headers, TIMESTAMP_HEADER: str(int(NOW) + 1)}  # a fresh timestamp on an old signature
    assert refused(verifier(), moved) == "bad_signature"


@pytest.mark.parametrize("age", [301, -301, 86_400])
def test_a_timestamp_outside_the_window_is_refused_even_when_correctly_signed(age: int) -> None:
    headers = signed_headers("webform", SECRET, BODY, now=NOW - age)
    assert refused(verifier(), headers) == "stale_timestamp"


def test_a_replayed_request_is_refused_and_a_released_one_may_come_again() -> None:
    v = verifier()
    headers = signed_headers("webform", SECRET, BODY, now=NOW)
    _, signature = v.verify(headers, BODY)
    assert refused(v, headers) == "replayed"
    v.guard.release(signature)  # the ingress did not accept it (e.g. 503): the client may resend it
    assert v.verify(headers, BODY)[0] == "webform"


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing_headers"),
        ({"X-Leadrelay-Source": "webform", TIMESTAMP_HEADER: str(int(NOW))}, "missing_headers"),
        ({"X-Leadrelay-Source": "nobody", TIMESTAMP_HEADER: "1", SIGNATURE_HEADER: "v1=00"}, "unknown_source"),
        ({"X-Leadrelay-Source": "webform", TIMESTAMP_HEADER: "-5", SIGNATURE_HEADER: "v1=00"}, "bad_timestamp"),
        ({"X-Leadrelay-Source": "webform", TIMESTAMP_HEADER: "1e9", SIGNATURE_HEADER: "v1=00"}, "bad_timestamp"),
        ({"X-Leadrelay-Source": "webform", TIMESTAMP_HEADER: str(int(NOW)), SIGNATURE_HEADER: "v1=ü"}, "bad_signature"),
    ],
)
def test_incomplete_or_malformed_headers_are_refused(headers: dict[str, str], reason: str) -> None:
    assert refused(verifier(), headers) == reason


def test_the_replay_guard_forgets_expired_signatures_and_stays_bounded() -> None:
    guard = ReplayGuard(window=10, capacity=3)
    assert guard.claim("a", 0) and not guard.claim("a", 5)
    assert guard.claim("a", 21)  # expired after 2 windows: the timestamp check refuses it anyway by then
    for i, sig in enumerate("bcde"):
        assert guard.claim(sig, 22 + i)
    assert len(guard.seen) <= 3 and guard.evicted >= 1


def test_signatures_depend_on_timestamp_and_body() -> None:
    assert sign(SECRET, 1, b"x") != sign(SECRET, 2, b"x") != sign(SECRET, 1, b"y")


def test_sources_file_refuses_short_secrets_without_printing_them(tmp_path: Path) -> None:
    path = tmp_path / "sources.yaml"
    path.write_text("webform: tooshort\n")
    with pytest.raises(SourcesError) as raised:
        load_sources(path)
    assert "tooshort" not in str(raised.value) and "webform" in str(raised.value)
    path.write_text("webform: a-long-enough-secret-123\ncrm: another-long-secret-456\n")
    assert load_sources(path) == {"webform": b"a-long-enough-secret-123", "crm": b"another-long-secret-456"}
    path.write_text("[]\n")
    with pytest.raises(SourcesError):
        load_sources(path)
