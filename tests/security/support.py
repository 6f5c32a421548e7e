"""Helpers shared by the security tests."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Coroutine
from typing import Any


def run_refusable(coro: Coroutine[Any, Any, Any]) -> tuple[Any, Exception | None]:
    """Run a client coroutine that the broker may refuse: (result, None) or (None, the error).

    A refused handshake or a failed start leaves an asyncio transport or an aiokafka client unclosed
    inside the library; that surfaces as a ResourceWarning whenever it is garbage-collected (an error
    under this suite's filterwarnings). Collect it here, where it is expected, instead of in a later test.
    """
    result: Any = None
    error: Exception | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            result = asyncio.run(coro)
        except Exception as exc:
            error = exc
            _drop_tracebacks(exc)  # their frames hold the failed clients: let them be collected now
        gc.collect()
    return result, error


def _drop_tracebacks(exc: BaseException | None) -> None:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc.__traceback__ = None
        exc = exc.__cause__ or exc.__context__
