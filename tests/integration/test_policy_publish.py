"""`leadrelay policy publish` on the real broker: it sends only what the worker will take (issue 9, item 5).

The worker refuses a policy that differs from the running one without a higher version
(stale_policy_version); publish compares with the running policy (the route table's changelog) and the
newest record on the policies topic, refuses such a policy with exit 1, and sends nothing for one that
is already live or already on the topic.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from streams.tools.cli import main

pytestmark = pytest.mark.integration


def policy_file(tmp_path: Path, version: int, **extra: object) -> str:
    body = {"id": "load-only", "version": version, "pool": "p", "strategies": {"default": {"scorers": {"load": 1.0}}}}
    path = tmp_path / f"policy-v{version}-{len(extra)}.json"
    path.write_bytes(orjson.dumps({**body, **extra}))
    return str(path)


def publish(dep, path: str, monkeypatch, capsys) -> tuple[int, str, str]:
    for name, value in dep.env.items():
        monkeypatch.setenv(name, value)
    code = main(["policy", "publish", path])
    out = capsys.readouterr()
    return code, out.out, out.err


def on_topic(dep) -> int:
    return len(dep.records(dep.settings.topic_policies, at_least=0))


def test_publish_compares_with_the_newest_record_on_the_topic(deployment, tmp_path, monkeypatch, capsys) -> None:
    dep = deployment  # no worker: nothing is live, the topic is the only baseline
    topic = dep.settings.topic_policies
    code, out, _ = publish(dep, policy_file(tmp_path, 2), monkeypatch, capsys)
    assert code == 0 and f"published policy load-only v2 for pool p to {topic}" in out
    assert "live policy none (default)" in out and f"newest on {topic}: none" in out

    code, out, _ = publish(dep, policy_file(tmp_path, 2), monkeypatch, capsys)
    assert code == 0 and f"already on {topic}, not yet live" in out and "nothing sent" in out

    code, out, err = publish(dep, policy_file(tmp_path, 1, description="older, different"), monkeypatch, capsys)
    assert code == 1 and f"newest on {topic}: load-only v2" in out
    assert err.startswith(f"refused: policy load-only v1 differs from the newest on {topic} policy load-only v2")
    assert "set `version` to 3 or more" in err
    assert on_topic(dep) == 1, "neither the copy nor the stale version was sent"

    code, out, _ = publish(dep, policy_file(tmp_path, 3, description="newer"), monkeypatch, capsys)
    assert code == 0 and "published policy load-only v3" in out
    assert on_topic(dep) == 2


def live(dep, version: int, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while (row := dep.table("policies").get("p")) is None or row["version"] != version:
        assert time.monotonic() < deadline, f"policy v{version} not live after {timeout}s: {row}"
        time.sleep(0.5)
    return row


def test_publish_compares_with_the_live_policy(deployment, tmp_path, monkeypatch, capsys) -> None:
    dep = deployment
    dep.worker()
    topic = dep.settings.topic_policies
    code, out, _ = publish(dep, policy_file(tmp_path, 1), monkeypatch, capsys)
    assert code == 0 and "published policy load-only v1" in out
    live(dep, 1)

    code, out, err = publish(dep, policy_file(tmp_path, 1), monkeypatch, capsys)
    assert code == 0, (out, err, dep.table("policies"))  # what it read, should this ever fail
    assert "live policy load-only v1" in out
    assert "already live: policy load-only v1 for pool p; nothing sent" in out

    code, _, err = publish(dep, policy_file(tmp_path, 1, description="same version"), monkeypatch, capsys)
    assert code == 1 and err.startswith("refused: policy load-only v1 differs from the live policy load-only v1")
    assert "stale_policy_version" in err
    assert on_topic(dep) == 1

    # A stale record that reached the topic another way (and was refused by the worker) is no baseline
    # that blocks a good version: the live one is v1, the stale one v1 too; v2 goes through.
    dep.send(topic, [(b"p", orjson.dumps({"id": "other", "version": 1, "pool": "p"}))])
    code, out, _ = publish(dep, policy_file(tmp_path, 2, description="bumped"), monkeypatch, capsys)
    assert code == 0 and "published policy load-only v2" in out
    live(dep, 2)
