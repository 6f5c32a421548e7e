"""The worker's port answers exactly the routes docs/operations.md lists, and nothing of Faust's own views."""

from __future__ import annotations

import re
from pathlib import Path

from streams.runtime.app import create_app
from streams.settings import Settings

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def documented_routes() -> set[str]:
    """The Path column of the 'What runs' table."""
    section = OPERATIONS.read_text().split("## What runs", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(/[^`]*)` \|", section, flags=re.MULTILINE))


def test_the_worker_serves_only_the_documented_routes(tmp_path: Path) -> None:
    relay = create_app(Settings(data_dir=tmp_path))
    relay.app.web.init_server()  # what the worker does at start: applies Faust's enabled blueprints
    served = {route.resource.canonical for route in relay.app.web.web_app.router.routes()}
    documented = documented_routes()
    assert {"/metrics", "/healthz", "/readyz"} <= documented
    assert served == documented
    assert not any(path.startswith(("/table", "/router", "/graph", "/stats")) for path in served)
