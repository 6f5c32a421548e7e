"""A local HTTP server that behaves like a CRM's API: slow answers, 429 with Retry-After, 5xx, 4xx and
hangs, on a script the test writes; it applies each Idempotency-Key once and counts the repeats."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass(frozen=True)
class Act:
    """What the CRM does with one request: answer `status` after `delay` s (with Retry-After if given).
    `apply_first`: apply the change on arrival, before the delay (the answer may never reach the sink)."""

    status: int = 204
    delay: float = 0.0
    retry_after: str | None = None
    apply_first: bool = False
    body: bytes = b""


OK = Act()
Script = Callable[[str, int, dict[str, Any]], Act]  # (idempotency key, attempt number, request) -> act


@dataclass
class Applied:
    key: str
    method: str
    path: str
    body: Any
    seq: int


@dataclass
class FakeCrm:
    script: Script = field(default=lambda key, n, req: OK)
    applied: dict[str, Applied] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    duplicates: int = 0
    arrived: threading.Event = field(default_factory=threading.Event)  # set on each request (tests wait on it)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    # --- behaviour ----------------------------------------------------------------------------------

    def _apply(self, key: str, request: dict[str, Any]) -> None:
        with self.lock:
            if key in self.applied:
                self.duplicates += 1
                return
            self.applied[key] = Applied(key, request["method"], request["path"], request["json"], len(self.applied))

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        key = request.headers.get("Idempotency-Key", "")
        info = {
            "method": request.method,
            "path": request.path_qs,
            "headers": dict(request.headers),
            "raw": raw,
            "json": orjson.loads(raw) if raw else None,
        }
        with self.lock:
            attempt = sum(1 for r in self.requests if r["headers"].get("Idempotency-Key") == key) + 1
            self.requests.append(info)
        self.arrived.set()
        act = self.script(key, attempt, info)
        if act.apply_first and 200 <= act.status < 300:
            self._apply(key, info)
        if act.delay:
            await asyncio.sleep(act.delay)
        if 200 <= act.status < 300 and not act.apply_first:
            self._apply(key, info)
        headers = {"Retry-After": act.retry_after} if act.retry_after else None
        return web.Response(status=act.status, body=act.body, headers=headers)

    # --- running in a thread of its own -------------------------------------------------------------

    def start(self) -> FakeCrm:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self.handle)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}"
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-crm", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def wait_applied(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.applied) >= n:
                    return
            time.sleep(0.05)
        raise AssertionError(f"fake CRM: {len(self.applied)} decisions applied after {timeout}s, wanted {n}")
