"""Request signatures: HMAC-SHA256 over timestamp and body, with a shared secret per source.

A source (a web form backend, a CRM's outbound webhook, a connector) signs each request:

    X-Leadrelay-Source:    the source's name, a key of the sources file
    X-Leadrelay-Timestamp: Unix time in whole seconds when the request was signed
    X-Leadrelay-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>

The ingress accepts a request when the source is known, the signature matches (compared in constant
time), the timestamp is within the replay window of its clock, and the same signature was not accepted
before within that window. The sink signs generic webhooks the same way (`sign`).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SOURCE_HEADER = "X-Leadrelay-Source"
TIMESTAMP_HEADER = "X-Leadrelay-Timestamp"
SIGNATURE_HEADER = "X-Leadrelay-Signature"
SCHEME = "v1"
MIN_SECRET_BYTES = 16  # shorter secrets are refused at start: HMAC is only as strong as its key


class AuthError(Exception):
    """A request that is not (or no longer) authentic; `reason` is a closed vocabulary (a metric label)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SourcesError(ValueError):
    """The sources file cannot be used (names the file, never a secret)."""


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"{SCHEME}={mac.hexdigest()}"


def signed_headers(source: str, secret: bytes, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """Every header a client sends with a signed request (used by tests, the bench and the sink)."""
    ts = int(time.time() if now is None else now)
    return {SOURCE_HEADER: source, TIMESTAMP_HEADER: str(ts), SIGNATURE_HEADER: sign(secret, ts, body)}


def load_sources(path: Path) -> dict[str, bytes]:
    """Source name -> secret from a YAML/JSON mapping; refuses empty, short or non-string secrets."""
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SourcesError(f"sources file {path}: {exc}") from None
    if not isinstance(loaded, dict) or not loaded:
        raise SourcesError(f"sources file {path}: expected a non-empty mapping of source name -> secret")
    sources: dict[str, bytes] = {}
    for name, secret in loaded.items():
        if not isinstance(name, str) or not name or len(name) > 64:
            raise SourcesError(f"sources file {path}: source names are strings of 1-64 characters")
        if not isinstance(secret, str) or len(secret.encode()) < MIN_SECRET_BYTES:
            raise SourcesError(f"sources file {path}: the secret of {name!r} must be a string of 16+ bytes")
        sources[name] = secret.encode()
    return sources


@dataclass
class ReplayGuard:
    """Signatures accepted within the window: a second use is a replay. Bounded: past `capacity` the
    oldest entries are dropped early (counted in `evicted`), so memory never grows with traffic."""

    window: float
    capacity: int = 1_000_000
    seen: OrderedDict[str, float] = field(default_factory=OrderedDict)  # signature -> expiry, oldest first
    evicted: int = 0

    def claim(self, signature: str, now: float) -> bool:
        """True if the signature is new (and now taken), False for a replay."""
        while self.seen:
            oldest, expiry = next(iter(self.seen.items()))
            if expiry > now and len(self.seen) < self.capacity:
                break
            if expiry > now:
                self.evicted += 1
            del self.seen[oldest]
        if signature in self.seen:
            return False
        self.seen[signature] = now + 2 * self.window  # a timestamp may be `window` old or ahead
        return True

    def release(self, signature: str) -> None:
        """A request that was not accepted (4xx/5xx after auth) may be sent again with the same signature."""
        self.seen.pop(signature, None)


@dataclass
class Verifier:
    """Checks the three headers against the sources; `clock` is injectable for tests."""

    sources: Mapping[str, bytes]
    window: float
    clock: Callable[[], float] = time.time
    guard: ReplayGuard = field(init=False)

    def __post_init__(self) -> None:
        self.guard = ReplayGuard(self.window)

    def verify(self, headers: Mapping[str, str], body: bytes) -> tuple[str, str]:
        """(source, signature) of an authentic request, else AuthError. The caller releases the
        signature if it does not accept the request."""
        source, stamp, given = (headers.get(h) for h in (SOURCE_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER))
        if not source or not stamp or not given:
            raise AuthError("missing_headers", f"send {SOURCE_HEADER}, {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}")
        secret = self.sources.get(source)
        if secret is None:
            raise AuthError("unknown_source", "unknown source")
        if not stamp.isdigit() or len(stamp) > 12:
            raise AuthError("bad_timestamp", f"{TIMESTAMP_HEADER} must be Unix time in whole seconds")
        expected = sign(secret, int(stamp), body)
        if not hmac.compare_digest(expected.encode(), given.encode()):
            raise AuthError("bad_signature", "signature does not match")
        now = self.clock()
        if abs(now - int(stamp)) > self.window:
            raise AuthError("stale_timestamp", f"timestamp outside the {self.window:.0f} s window: sign it again")
        if not self.guard.claim(given, now):
            raise AuthError("replayed", "this signature was already used: sign each request afresh")
        return source, given
