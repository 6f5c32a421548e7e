"""The ingress's HTTP API: signed POSTs of leads and deals, validated by the contracts, answered 202 once
Kafka acknowledged every record.

    POST /v1/leads   application/json: one LeadCreated      application/x-ndjson: JSON lines, one each
    POST /v1/leads/updated   the same with LeadCreated, a new version of a lead (to leads.updated)
    POST /v1/deals   the same with DealClosed (activity and claims alike: /v1/activity, /v1/claims)
    GET  /healthz    the process answers          GET /readyz   connected to Kafka (else 503)

Answers: 202 accepted (partition and offset of each record); 400 invalid input, naming the field path
(and the line of a batch) and never quoting the input; 401 not authentic (streams/ingress/auth.py);
413 a record over max_payload_bytes, a body over MAX_BODY_BYTES or more lines than ingress_max_batch_lines;
415 another content type; 429 too many records await their acknowledgement; 503 Kafka did not acknowledge
within ingress_ack_timeout_seconds (or is not connected). A batch is validated whole before anything is
sent: one bad line refuses it all. If Kafka then fails part of it, the answer is 503 with a result per
line; sending the batch again is safe (the worker dedupes leads on lead_id, the sink's CRM on decision_id).
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel

from schemas.events import DealClosed, LeadActivity, LeadClaim, LeadCreated
from streams.codecs import parse
from streams.errors import InvalidInput, PayloadTooLarge
from streams.ingress.auth import AuthError, Verifier, load_sources
from streams.ingress.metrics import IngressMetrics
from streams.ingress.publisher import Ack, InFlight, KafkaPublisher, Overloaded, Publisher, Unavailable
from streams.settings import Settings, SettingsError
from streams.tools.supervise import run_until_signalled
from streams.web.logs import redact, worker_logging

log = logging.getLogger("leadrelay.ingress")
MAX_BODY_BYTES = 8 * 1024 * 1024
SINGLE_TYPES = frozenset({"application/json"})
BATCH_TYPES = frozenset({"application/x-ndjson", "application/jsonl", "application/json-lines"})
RETRY_AFTER = {"Retry-After": "1"}


@dataclass(frozen=True)
class Route:
    """One POST endpoint: /v1/<path> (the name unless given) validates with `model` and publishes to
    `topic(settings)`; the name labels its metrics."""

    name: str
    model: type[BaseModel]
    topic: Callable[[Settings], str]
    key_field: str = "lead_id"
    path: str | None = None

    @property
    def url(self) -> str:
        return f"/v1/{self.path or self.name}"


# Register, don't branch: a path that is not listed is 404.
ROUTES = (
    Route("leads", LeadCreated, lambda s: s.topic_leads_new),
    Route("lead_updates", LeadCreated, lambda s: s.topic_leads_updated, path="leads/updated"),
    Route("deals", DealClosed, lambda s: s.topic_deals_closed),
    Route("activity", LeadActivity, lambda s: s.topic_lead_activity),
    Route("claims", LeadClaim, lambda s: s.topic_claims),
)


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def _refusal(exc: InvalidInput, line: int | None) -> dict[str, Any]:
    """A 400/413 body: reason, field path and message; masked like a log line (no echoed input)."""
    body: dict[str, Any] = {"error": exc.reason, "message": redact(str(exc))}
    if exc.field:
        body["field"] = redact(exc.field)
    if line is not None:
        body["line"] = line
    return body


@dataclass
class Ingress:
    settings: Settings
    verifier: Verifier
    publisher: Publisher
    metrics: IngressMetrics
    in_flight: InFlight = field(init=False)

    def __post_init__(self) -> None:
        self.in_flight = InFlight(self.settings.ingress_max_in_flight)
        self.metrics.in_flight.set_function(lambda: float(self.in_flight.count))
        self.metrics.ready.set_function(lambda: 1.0 if self.publisher.ready else 0.0)

    # --- the POST handler ---------------------------------------------------------------------------

    def handler(self, route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return _json(413, {"error": "payload_too_large", "message": f"body over {MAX_BODY_BYTES} bytes"})
            try:
                source, signature = self.verifier.verify(request.headers, body)
            except AuthError as exc:
                self.metrics.auth_failures.labels(reason=exc.reason).inc()
                log.warning("refused %s request: %s", route.name, exc.reason, extra={"reason": exc.reason})
                return _json(401, {"error": "unauthorized", "reason": exc.reason, "message": str(exc)})
            response = await self.accept(route, source, request.content_type, body)
            if response.status >= 300:  # not accepted: the client may send the same signed request again
                self.verifier.guard.release(signature)
            return response

        return handle

    async def accept(self, route: Route, source: str, content_type: str, body: bytes) -> web.Response:
        batch = content_type in BATCH_TYPES
        if not batch and content_type not in SINGLE_TYPES:
            kinds = ", ".join(sorted(SINGLE_TYPES | BATCH_TYPES))
            return _json(415, {"error": "unsupported_media_type", "message": f"send one of: {kinds}"})
        lines = [(n, line) for n, line in enumerate(body.split(b"\n"), 1) if line.strip()] if batch else [(None, body)]
        if len(lines) > self.settings.ingress_max_batch_lines:
            limit = self.settings.ingress_max_batch_lines
            return _json(413, {"error": "too_many_lines", "message": f"{len(lines)} lines > limit {limit}"})
        records: list[tuple[bytes, bytes]] = []
        for n, line in lines:
            try:
                record = parse(route.model, line, max_bytes=self.settings.max_payload_bytes)
            except InvalidInput as exc:
                outcome, status = ("too_large", 413) if isinstance(exc, PayloadTooLarge) else ("invalid", 400)
                self.metrics.record_records(route.name, source, outcome, len(lines))
                return _json(status, _refusal(exc, n))
            records.append((str(getattr(record, route.key_field)).encode(), line.rstrip(b"\r")))
        if not records:
            return _json(400, {"error": "invalid_json", "message": "empty body"})
        try:
            results = await self.publish(route.topic(self.settings), records, source)
        except Overloaded as exc:
            self.metrics.record_records(route.name, source, "overloaded", len(records))
            return _json(429, {"error": "overloaded", "message": str(exc)}, RETRY_AFTER)
        accepted = sum(isinstance(r, Ack) for r in results)
        self.metrics.record_records(route.name, source, "accepted", accepted)
        self.metrics.record_records(route.name, source, "unavailable", len(results) - accepted)
        return self._answer(route, records, results, [n for n, _ in lines], batch=batch)

    def _answer(
        self,
        route: Route,
        records: list[tuple[bytes, bytes]],
        results: list[Ack | Exception],
        numbers: list[int | None],
        *,
        batch: bool,
    ) -> web.Response:
        items: list[dict[str, Any]] = []
        for (key, _), result, n in zip(records, results, numbers, strict=True):
            item: dict[str, Any] = {route.key_field: key.decode()}
            if n is not None:
                item["line"] = n
            if isinstance(result, Ack):
                item |= {"status": "accepted", "partition": result.partition, "offset": result.offset}
            else:
                item |= {"status": "failed", "error": str(result) or type(result).__name__}
            items.append(item)
        failed = [i for i in items if i["status"] == "failed"]
        if not batch:
            if failed:
                return _json(503, {"error": "kafka_unavailable", "message": failed[0]["error"]}, RETRY_AFTER)
            return _json(202, items[0])
        summary = {"accepted": len(items) - len(failed), "failed": len(failed), "results": items}
        if failed:
            return _json(503, {"error": "kafka_unavailable", **summary}, RETRY_AFTER)
        return _json(202, {"status": "accepted", **summary})

    # --- Kafka --------------------------------------------------------------------------------------

    async def publish(self, topic: str, records: list[tuple[bytes, bytes]], source: str) -> list[Ack | Exception]:
        """Send in order and wait for every acknowledgement until the deadline. After the first record
        Kafka would not take, the rest are not sent (so no later record of a lead overtakes it)."""
        self.in_flight.acquire(len(records))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.ingress_ack_timeout_seconds
        headers = [("x-leadrelay-ingress-source", source.encode())]
        pending: list[asyncio.Future[Ack] | Exception] = []
        for key, value in records:
            if pending and isinstance(pending[-1], Exception):
                pending.append(Unavailable("not sent: an earlier record of the request failed"))
                self.in_flight.release()
                continue
            try:
                sent = await asyncio.wait_for(
                    self.publisher.send(topic, key, value, headers), max(0.0, deadline - loop.time())
                )
            except (Unavailable, TimeoutError) as exc:
                pending.append(exc if isinstance(exc, Unavailable) else Unavailable("Kafka did not take the record"))
                self.in_flight.release()
                continue
            sent.add_done_callback(self._done)
            pending.append(sent)
        futures = [p for p in pending if isinstance(p, asyncio.Future)]
        if futures:
            await asyncio.wait(futures, timeout=max(0.0, deadline - loop.time()))
        return [_result(p) for p in pending]

    def _done(self, fut: asyncio.Future[Ack]) -> None:
        self.in_flight.release()
        if not fut.cancelled():
            fut.exception()  # retrieved: an unanswered failure is not "never retrieved"


def _result(p: asyncio.Future[Ack] | Exception) -> Ack | Exception:
    if isinstance(p, Exception):
        return p
    if not p.done():
        return Unavailable("no acknowledgement from Kafka in time")
    exc = p.exception()
    return exc if isinstance(exc, Exception) else p.result()


# --- the two web apps -------------------------------------------------------------------------------


def _status_of(exc: BaseException) -> int:
    return exc.status if isinstance(exc, web.HTTPException) else 500


def api_app(ingress: Ingress) -> web.Application:
    """The public API: the POST routes plus /healthz and /readyz for a load balancer."""
    names = {r.name for r in ROUTES}

    @web.middleware
    async def observe(request: web.Request, handler: Any) -> web.StreamResponse:
        started, status = time.perf_counter(), 500
        try:
            response: web.StreamResponse = await handler(request)
            status = response.status
            return response
        except BaseException as exc:
            status = _status_of(exc)
            raise
        finally:
            name = request.match_info.route.name
            ingress.metrics.record_request(name if name in names else "other", status, time.perf_counter() - started)

    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[observe])
    for route in ROUTES:
        app.router.add_post(route.url, ingress.handler(route), name=route.name)
    add_health(app, ingress)
    return app


def add_health(app: web.Application, ingress: Ingress) -> None:
    async def healthz(request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        ready = ingress.publisher.ready
        return _json(200 if ready else 503, {"ready": ready, "kafka": "connected" if ready else "not connected"})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def internal_app(ingress: Ingress) -> web.Application:
    """web_host:web_port: /metrics and the health endpoints, for Prometheus and the orchestrator."""
    app = web.Application()

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(ingress.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app.router.add_get("/metrics", metrics)
    add_health(app, ingress)
    return app


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """HTTPS when a certificate and key are configured (both or neither); TLS 1.2 at least."""
    cert, key = settings.ingress_tls_certfile, settings.ingress_tls_keyfile
    if cert is None and key is None:
        return None
    env = Settings.env_var
    if cert is None or key is None:
        raise SettingsError(f"HTTPS needs both {env('ingress_tls_certfile')} and {env('ingress_tls_keyfile')}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"{env('ingress_tls_certfile')}/{env('ingress_tls_keyfile')}: cannot load: {exc}") from None
    return context


def build(settings: Settings, publisher: Publisher, registry: CollectorRegistry | None = None) -> Ingress:
    if settings.ingress_sources_file is None:
        raise SettingsError(f"the ingress needs {Settings.env_var('ingress_sources_file')} (source -> secret)")
    try:
        sources = load_sources(settings.ingress_sources_file)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    verifier = Verifier(sources, settings.ingress_replay_window_seconds)
    return Ingress(settings, verifier, publisher, IngressMetrics.create(registry or CollectorRegistry()))


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run until `stop` is set, then stop taking requests, let the in-flight ones finish, flush Kafka."""
    tls = server_ssl_context(settings)
    publisher = KafkaPublisher(settings)
    ingress = build(settings, publisher)
    await publisher.start()
    runners = [web.AppRunner(api_app(ingress), access_log=None), web.AppRunner(internal_app(ingress), access_log=None)]
    for runner in runners:
        await runner.setup()
    sites = [
        web.TCPSite(runners[0], settings.ingress_host, settings.ingress_port, ssl_context=tls),
        web.TCPSite(runners[1], settings.web_host, settings.web_port),
    ]
    for site in sites:
        await site.start()
    scheme = "https" if tls else "http"
    log.info(
        "ingress on %s://%s:%s, metrics on :%s", scheme, settings.ingress_host, settings.ingress_port, settings.web_port
    )
    try:
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()  # waits for handlers in progress (aiohttp's shutdown timeout)
        await publisher.stop()


def run(settings: Settings) -> int:
    logging.config.dictConfig(worker_logging(settings.log_level))
    server_ssl_context(settings)  # configuration errors before anything starts
    build(settings, KafkaPublisher(settings))

    run_until_signalled(lambda stop: serve(settings, stop))
    return 0
