"""The ingress's HTTP answers against a fake Kafka publisher: 202 only after the acknowledgement, 400
with the field path and no contact data, 401, 404, 413, 415, 429, 503, and JSON-lines batches."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest

from streams.ingress.app import Ingress, api_app, build, internal_app
from streams.ingress.auth import signed_headers
from streams.ingress.publisher import Ack, Unavailable
from streams.settings import Settings
from tests.deploy.observability import promtool_lint

SECRET = b"webform-secret-0123456789"
NDJSON = "application/x-ndjson"
CONTACT = {"name": "Jane Roe", "email": "jane.roe@example.com", "phone": "+49 30 1234567"}


class FakePublisher:
    """Acknowledges at once, unless told to refuse (not connected), hang (no ack) or fail some keys."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
        self.ready = True
        self.refuse = False
        self.hang = False
        self.fail_keys: set[bytes] = set()
        self.refuse_keys: set[bytes] = set()
        self.hanging: list[asyncio.Future[Ack]] = []

    async def send(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> asyncio.Future[Ack]:
        if self.refuse or key in self.refuse_keys:
            raise Unavailable("KafkaConnectionError")
        fut: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        if self.hang:
            self.hanging.append(fut)
            return fut
        if key in self.fail_keys:
            fut.set_exception(Unavailable("NotEnoughReplicasError"))
            return fut
        self.sent.append((topic, key, value, headers))
        fut.set_result(Ack(partition=1, offset=len(self.sent) - 1))
        return fut


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"webform: {SECRET.decode()}\n")
    base: dict[str, Any] = {
        "ingress_sources_file": sources,
        "ingress_ack_timeout_seconds": 0.3,
        "ingress_max_batch_lines": 10,
        "max_payload_bytes": 1024,
    }
    return Settings(**{**base, **overrides})


def lead(lead_id: str = "l1", **fields: Any) -> dict[str, Any]:
    return {"lead_id": lead_id, "created_at": "2026-01-05T09:00:00Z", **fields}


Call = Callable[..., Awaitable[tuple[int, dict[str, Any], dict[str, str]]]]


def run(tmp_path: Path, test: Callable[[Call, FakePublisher, Ingress], Awaitable[None]], **overrides: Any) -> None:
    publisher = FakePublisher()
    ingress = build(settings(tmp_path, **overrides), publisher, CollectorRegistry())

    async def main() -> None:
        async with TestClient(TestServer(api_app(ingress))) as client:

            async def call(
                path: str,
                body: bytes,
                *,
                ctype: str = "application/json",
                secret: bytes = SECRET,
                sign: bool = True,
                signed: dict[str, str] | None = None,
            ) -> tuple[int, dict[str, Any], dict[str, str]]:
                signature = signed or (signed_headers("webform", secret, body) if sign else {})
                headers = {"Content-Type": ctype, **signature}
                resp = await client.post(path, data=body, headers=headers)
                text = await resp.read()
                assert b"jane" not in text.lower() and b"1234567" not in text, "contact data echoed"
                return resp.status, (orjson.loads(text) if text.startswith(b"{") else {}), dict(resp.headers)

            await test(call, publisher, ingress)

    asyncio.run(main())


def test_a_valid_lead_is_answered_202_after_kafka_acknowledged_it(tmp_path: Path) -> None:
    body = orjson.dumps(lead("web-1", contact=CONTACT))

    async def test(call: Call, pub: FakePublisher, ingress: Ingress) -> None:
        status, answer, _ = await call("/v1/leads", body)
        assert status == 202 and answer == {"lead_id": "web-1", "status": "accepted", "partition": 1, "offset": 0}
        [(topic, key, value, headers)] = pub.sent
        assert (topic, key, value) == ("leads.new", b"web-1", body), "the record as received, keyed by lead_id"
        assert headers == [("x-leadrelay-ingress-source", b"webform")]

    run(tmp_path, test)


def test_a_deal_goes_to_the_deals_topic(tmp_path: Path) -> None:
    body = orjson.dumps({"lead_id": "web-1", "outcome": "won", "amount": 10, "closed_at": "2026-01-09T00:00:00Z"})

    async def test(call: Call, pub: FakePublisher, ingress: Ingress) -> None:
        assert (await call("/v1/deals", body))[0] == 202
        assert [(t, k) for t, k, _, _ in pub.sent] == [("deals.closed", b"web-1")]

    run(tmp_path, test)


def test_a_lead_update_goes_to_the_updates_topic(tmp_path: Path) -> None:
    body = orjson.dumps(lead("web-1", pool="emea"))

    async def test(call: Call, pub: FakePublisher, ingress: Ingress) -> None:
        assert (await call("/v1/leads/updated", body))[0] == 202
        status, answer, _ = await call("/v1/leads/updated", b'{"lead_id": "x"}')
        assert status == 400 and answer["field"] == "created_at"
        assert [(t, k, v) for t, k, v, _ in pub.sent] == [("leads.updated", b"web-1", body)]

    run(tmp_path, test)


def test_activity_and_claims_go_to_their_topics_keyed_by_lead(tmp_path: Path) -> None:
    activity = orjson.dumps({"lead_id": "web-1", "kind": "first_contact", "occurred_at": "2026-01-09T00:00:00Z"})
    claim = orjson.dumps(
        {"claim_id": "c-1", "lead_id": "web-2", "rep_id": "anna", "requested_at": "2026-01-09T00:00:00Z"}
    )

    async def test(call: Call, pub: FakePublisher, ingress: Ingress) -> None:
        assert (await call("/v1/activity", activity))[0] == 202
        assert (await call("/v1/claims", claim))[0] == 202
        status, answer, _ = await call("/v1/activity", orjson.dumps({"lead_id": "web-3", "kind": "called"}))
        assert status == 400 and answer["field"] in ("kind", "occurred_at")
        assert [(t, k) for t, k, _, _ in pub.sent] == [("leads.activity", b"web-1"), ("leads.claims", b"web-2")]

    run(tmp_path, test)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"country": "germany"}, "country"),
        ({"contact": {**CONTACT, "email": "jane.roe@example.com" + "x" * 300}}, "contact.email"),
        ({"contact": {**CONTACT, "jane.roe@example.com": 1}}, "contact"),  # a sender-chosen key is not echoed
        ({"estimated_value": -5}, "estimated_value"),
    ],
)
def test_invalid_input_is_400_with_the_field_path_and_no_contact_data(
    tmp_path: Path, fields: dict[str, Any], field: str
) -> None:
    async def test(call: Call, pub: FakePublisher, ingress: Ingress) -> None:
        status, answer, _ = await call("/v1/leads", orjson.dumps(lead(contact=CONTACT) | fields))
        assert status == 400 and answer["error"] == "schema_violation" and answer["field"] == field
        assert pub.sent == []

    run(tmp_path, test)


def test_broken_json_and_a_missing_field_are_400(tmp_path: Path) -> None:
    async def test(call: Call, pub: FakePublisher, ingress: Ingress) -> None:
        status, answer, _ = await call("/v1/leads", b'{"lead_id": ')
        assert (status, answer["error"]) == (400, "invalid_json")
        status, answer, _ = await call("/v1/leads", b'{"lead_id": "x"}')
        assert (status, answer["error"], answer["field"]) == (400, "schema_violation", "created_at")
        assert pub.sent == []

    run(tmp_path, test)


def test_an_oversized_record_is_413_and_not_sent(tmp_path: Path) -> None:
    async def test(call: Call, pub: FakePublisher, ingress: Ingress) -> None:
        status, answer, _ = await call("/v1/leads", orjson.dumps(lead(source="x" * 2000)))
        assert (status, answer["error"]) == (413, "payload_too_large") and pub.sent == []

    run(tmp_path, test)


def test_unsigned_or_forged_requests_are_401_and_nothing_is_sent(tmp_path: Path) -> None:
    async def test(call: Call, pub: FakePublisher, ingress: Ingress) -> None:
        body = orjson.dumps(lead())
        assert (await call("/v1/leads", body, sign=False))[1]["reason"] == "missing_headers"
        status, answer, _ = await call("/v1/leads", body, secret=b"not-the-secret-00000000")
        assert (status, answer["reason"]) == (401, "bad_signature")
        assert pub.sent == []
        assert ingress.metrics.auth_failures.labels(reason="bad_signature")._value.get() == 1

    run(tmp_path, test)


def test_no_broker_is_503_with_retry_after_and_the_same_request_may_be_resent(tmp_path: Path) -> None:
    async def test(call: Call, pub: FakePublisher, ingress: Ingress) -> None:
        body = orjson.dumps(lead())
        headers = signed_headers("webform", SECRET, body)
        pub.refuse = True
        status, answer, resp_headers = await call("/v1/leads", body, signed=headers)
        assert (status, answer["error"], resp_headers["Retry-After"]) == (503, "kafka_unavailable", "1")
        pub.refuse = False
        # the identical signed request again: not a replay, since it was not accepted
        assert (await call("/v1/leads", body, signed=headers))[0] == 202
        status, answer, _ = await call("/v1/leads", body, signed=headers)  # now it is one
        assert (status, answer["reason"]) == (401, "replayed") and len(pub.sent) == 1

    run(tmp_path, test)


def test_no_acknowledgement_in_time_is_503(tmp_path: Path) -> None:
    async def test(call: Call, pub: FakePublisher, ingress: Ingress) -> None:
        pub.hang = True
        status, answer, _ = await call("/v1/leads", orjson.dumps(lead()))
        assert status == 503 and "acknowledgement" in answer["message"]
        assert ingress.in_flight.count == 1, "the unacknowledged record still counts against the bound"
        pub.hanging[0].set_result(Ack(0, 0))
        await asyncio.sleep(0)
        assert ingress.in_flight.count == 0

    run(tmp_path, test)


def test_a_full_buffer_is_429(tmp_path: Path) -> None:
    async def test(call: Call, pub: FakePublisher, ingress: Ingress) -> None:
        pub.hang = True
        assert (await call("/v1/leads", orjson.dumps(lead("a"))))[0] == 503  # still in flight
        assert (await call("/v1/leads", orjson.dumps(lead("b"))))[0] == 503
        status, answer, headers = await call("/v1/leads", orjson.dumps(lead("c")))
        assert (status, answer["error"], headers["Retry-After"]) == (429, "overloaded", "1")
        assert len(pub.hanging) == 2, "the refused record was never sent"

    run(tmp_path, test, ingress_max_in_flight=2)


def batch(*records: dict[str, Any] | bytes) -> bytes:
    return b"\n".join(r if isinstance(r, bytes) else orjson.dumps(r) for r in records) + b"\n"


def test_a_batch_is_published_in_order_with_a_result_per_line(tmp_path: Path) -> None:
    async def test(call: Call, pub: FakePublisher, ingress: Ingress) -> None:
        status, answer, _ = await call("/v1/leads", batch(lead("a"), lead("b"), lead("c")), ctype=NDJSON)
        assert status == 202 and answer["accepted"] == 3 and answer["failed"] == 0
        assert [r["line"] for r in answer["results"]] == [1, 2, 3]
        assert [k for _, k, _, _ in pub.sent] == [b"a", b"b", b"c"]

    run(tmp_path, test)


def test_one_bad_line_refuses_the_whole_batch_and_names_the_line(tmp_path: Path) -> None:
    async def test(call: Call, pub: FakePublisher, ingress: Ingress) -> None:
        body = batch(lead("a"), lead("b", country="xx", contact=CONTACT), lead("c"))
        status, answer, _ = await call("/v1/leads", body, ctype=NDJSON)
        assert (status, answer["line"], answer["field"]) == (400, 2, "country")
        status, answer, _ = await call("/v1/leads", batch(lead("a"), b"{not json"), ctype=NDJSON)
        assert (status, answer["line"], answer["error"]) == (400, 2, "invalid_json")
        assert pub.sent == []

    run(tmp_path, test)


def test_a_partial_broker_failure_is_503_with_a_result_per_line(tmp_path: Path) -> None:
    async def test(call: Call, pub: FakePublisher, ingress: Ingress) -> None:
        pub.fail_keys = {b"b"}  # b is taken, then not acknowledged; c was enqueued before that was known
        status, answer, _ = await call("/v1/leads", batch(lead("a"), lead("b"), lead("c")), ctype=NDJSON)
        assert status == 503 and (answer["accepted"], answer["failed"]) == (2, 1)
        assert [(r["line"], r["lead_id"], r["status"]) for r in answer["results"]] == [
            (1, "a", "accepted"),
            (2, "b", "failed"),
            (3, "c", "accepted"),
        ]

    run(tmp_path, test)


def test_after_a_record_kafka_would_not_take_the_rest_of_the_batch_is_not_sent(tmp_path: Path) -> None:
    async def test(call: Call, pub: FakePublisher, ingress: Ingress) -> None:
        pub.refuse_keys = {b"b"}
        status, answer, _ = await call("/v1/leads", batch(lead("a"), lead("b"), lead("c")), ctype=NDJSON)
        assert status == 503 and [r["status"] for r in answer["results"]] == ["accepted", "failed", "failed"]
        assert "not sent" in answer["results"][2]["error"]
        assert [k for _, k, _, _ in pub.sent] == [b"a"] and ingress.in_flight.count == 0

    run(tmp_path, test)


def test_batch_limits_are_413(tmp_path: Path) -> None:
    async def test(call: Call, pub: FakePublisher, ingress: Ingress) -> None:
        many = batch(*(lead(f"l{i}") for i in range(11)))
        status, answer, _ = await call("/v1/leads", many, ctype=NDJSON)
        assert (status, answer["error"]) == (413, "too_many_lines")
        big = batch(lead("a"), lead("b", source="y" * 2000))
        status, answer, _ = await call("/v1/leads", big, ctype=NDJSON)
        assert (status, answer["error"], answer["line"]) == (413, "payload_too_large", 2)
        assert pub.sent == []

    run(tmp_path, test)


def test_unknown_routes_and_types(tmp_path: Path) -> None:
    async def test(call: Call, pub: FakePublisher, ingress: Ingress) -> None:
        assert (await call("/v1/contacts", orjson.dumps(lead())))[0] == 404
        assert (await call("/v1/leads", orjson.dumps(lead()), ctype="text/plain"))[0] == 415
        assert pub.sent == []

    run(tmp_path, test)


def test_metrics_count_requests_by_route_and_status_class_and_pass_promtool(tmp_path: Path) -> None:
    async def test(call: Call, pub: FakePublisher, ingress: Ingress) -> None:
        await call("/v1/leads", orjson.dumps(lead()))
        await call("/v1/leads", b"{}")
        await call("/v1/nowhere", b"{}")
        async with TestClient(TestServer(internal_app(ingress))) as internal:
            text = await (await internal.get("/metrics")).text()
            ready = await internal.get("/readyz")
            assert ready.status == 200
        assert 'leadrelay_ingress_requests_total{route="leads",status_class="2xx"} 1.0' in text
        assert 'leadrelay_ingress_requests_total{route="leads",status_class="4xx"} 1.0' in text
        assert 'leadrelay_ingress_requests_total{route="other",status_class="4xx"} 1.0' in text
        assert 'leadrelay_ingress_records_total{outcome="accepted",route="leads",source="webform"} 1.0' in text
        assert "leadrelay_ingress_request_duration_seconds_bucket" in text
        assert promtool_lint(text) == {}

    run(tmp_path, test)


def test_not_ready_until_connected(tmp_path: Path) -> None:
    async def test(call: Call, pub: FakePublisher, ingress: Ingress) -> None:
        pub.ready = False
        async with TestClient(TestServer(api_app(ingress))) as client:
            assert (await client.get("/readyz")).status == 503
            assert (await client.get("/healthz")).status == 200
        assert b"leadrelay_ingress_ready 0.0" in generate_latest(ingress.metrics.registry)

    run(tmp_path, test)
