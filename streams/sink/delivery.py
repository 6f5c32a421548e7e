"""Deliver one decision: render its request, call the CRM, retry what may succeed later, and say how it
ended (delivered, skipped, or to be dead-lettered with the CRM's answer)."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import aiohttp

from schemas.events import AssignmentDecision
from streams.codecs import parse
from streams.errors import InvalidInput
from streams.settings import Settings, SettingsError
from streams.sink.metrics import SinkMetrics, attempt_result
from streams.sink.retry import classify, next_wait, parse_retry_after
from streams.sink.templates import TEMPLATES, IdMapping, Target, Unmapped
from streams.web.logs import bind, redact

log = logging.getLogger("leadrelay.sink")
MAX_RESPONSE_BODY = 1024  # kept of a refusal's body, for the dead letter (masked like a log line)
MAX_DECISION_BYTES = 1 << 20

Kind = Literal["delivered", "skipped", "dead_letter"]


@dataclass(frozen=True)
class Outcome:
    kind: Kind
    reason: str | None = None  # of a dead letter: crm_refused, retries_exhausted, unmapped_*, invalid_decision
    status: int | None = None
    body: str = ""
    attempts: int = 0
    decision_id: str | None = None


@dataclass(frozen=True)
class Answer:
    status: int | None
    body: bytes
    retry_after: float | None
    error: str | None = None  # "timeout" or the client error's class when there was no answer


def target_of(settings: Settings) -> Target:
    if not settings.sink_url:
        raise SettingsError(f"the sink needs {Settings.env_var('sink_url')} (the webhook or the CRM's API base)")
    return Target(
        url=settings.sink_url,
        token=settings.sink_token.get_secret_value() if settings.sink_token else None,
        signing_secret=settings.sink_signing_secret.get_secret_value().encode()
        if settings.sink_signing_secret
        else None,
        salesforce_api_version=settings.sink_salesforce_api_version,
    )


class Deliverer:
    """Calls the CRM for one decision at a time; the caller keeps one decision of a partition in flight."""

    def __init__(
        self,
        settings: Settings,
        session: aiohttp.ClientSession,
        mapping: IdMapping,
        metrics: SinkMetrics,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.session = session
        self.mapping = mapping
        self.metrics = metrics
        self.template = TEMPLATES[settings.sink_template]
        self.target = target_of(settings)
        self.sleep, self.clock, self.rng = sleep, clock, rng or random.Random()

    async def deliver(self, raw: bytes | None) -> Outcome:
        try:
            decision = parse(AssignmentDecision, raw, max_bytes=MAX_DECISION_BYTES)
        except InvalidInput as exc:
            return Outcome("dead_letter", "invalid_decision", body=redact(str(exc))[:MAX_RESPONSE_BODY])
        with bind(lead_id=decision.lead_id, decision_id=decision.decision_id, rep_id=decision.rep_id):
            return await self._deliver(decision)

    async def _deliver(self, d: AssignmentDecision) -> Outcome:
        if d.rep_id is None and self.template.needs_owner:
            return Outcome("skipped", decision_id=d.decision_id)
        try:
            owner, record = self.mapping.owner(d.rep_id), self.mapping.record(d.lead_id)
        except Unmapped as exc:
            log.warning("not delivered: %s", exc, extra={"reason": exc.reason})
            return Outcome("dead_letter", exc.reason, body=str(exc), decision_id=d.decision_id)
        s = self.settings
        deadline = self.clock() + s.sink_give_up_seconds
        attempts = 0
        while True:
            attempts += 1
            request = self.template.render(self.target, d, owner, record, time.time())
            answer = await self._call(request.method, request.url, request.headers, request.body)
            self.metrics.attempts.labels(result=attempt_result(answer.status, answer.error)).inc()
            verdict = classify(answer.status)
            body = redact(answer.body.decode("utf-8", "replace"))
            if verdict == "delivered":
                self.metrics.age.observe(max(0.0, (datetime.now(UTC) - d.decided_at).total_seconds()))
                return Outcome("delivered", status=answer.status, attempts=attempts, decision_id=d.decision_id)
            if verdict == "refused":
                log.warning("CRM refused the decision with %s", answer.status, extra={"reason": "crm_refused"})
                return Outcome("dead_letter", "crm_refused", answer.status, body, attempts, d.decision_id)
            wait = next_wait(
                attempts,
                answer.retry_after,
                initial=s.sink_backoff_initial_seconds,
                cap=s.sink_backoff_max_seconds,
                rng=self.rng,
            )
            if self.clock() + wait > deadline:
                log.error("giving up after %d attempts (last: %s)", attempts, answer.status or answer.error)
                return Outcome("dead_letter", "retries_exhausted", answer.status, body, attempts, d.decision_id)
            log.info("attempt %d: %s; next in %.2f s", attempts, answer.status or answer.error, wait)
            await self.sleep(wait)

    async def _call(self, method: str, url: str, headers: dict[str, str], body: bytes) -> Answer:
        timeout = aiohttp.ClientTimeout(total=self.settings.sink_timeout_seconds)
        try:
            async with self.session.request(
                method, url, headers=headers, data=body, timeout=timeout, allow_redirects=False
            ) as resp:
                text = await resp.content.read(MAX_RESPONSE_BODY)
                return Answer(resp.status, text, parse_retry_after(resp.headers.get("Retry-After"), datetime.now(UTC)))
        except TimeoutError:
            return Answer(None, b"timeout", None, "timeout")
        except aiohttp.ClientError as exc:
            return Answer(None, type(exc).__name__.encode(), None, type(exc).__name__)
