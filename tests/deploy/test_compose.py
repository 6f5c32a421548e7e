"""deploy/docker-compose.yml as docker-compose resolves it (`docker-compose config`, no daemon): Kafka's two
listeners, the services a CRM needs (ingress, sink, archive with PostgreSQL), their ports and settings."""

from __future__ import annotations

import os
import subprocess
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from streams.ingress.auth import load_sources
from streams.settings import Settings
from streams.sink.delivery import target_of
from tests.deploy.observability import DEPLOY, tool
from tests.deploy.test_manifests import COMPOSE, CONFIG, assert_known_settings, settings_from

LEADRELAY = ("worker-1", "worker-2", "ingress", "sink", "archive")  # the long-running leadrelay processes


@cache
def resolved() -> dict[str, Any]:
    """The file after interpolation and merges, with the defaults a fresh shell gets."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEADRELAY_", "POSTGRES_"))}
    proc = subprocess.run(
        [tool("docker-compose"), "-f", str(COMPOSE), "config"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=DEPLOY,
        env=env,
    )
    data: dict[str, Any] = yaml.safe_load(proc.stdout)
    return data


def service(name: str) -> dict[str, Any]:
    return resolved()["services"][name]  # type: ignore[no-any-return]


def env_of(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in service(name).get("environment", {}).items()}


def published(name: str) -> dict[int, tuple[int, str]]:
    """container port -> (host port, host ip or ""). docker-compose 1.x keeps "ip:host:container/tcp" short."""
    out = {}
    for p in service(name).get("ports", []):
        if isinstance(p, str):
            *ip, host, target = p.split("/")[0].split(":")
            out[int(target)] = (int(host), ip[0] if ip else "")
        else:
            out[int(p["target"])] = (int(p["published"]), p.get("host_ip", ""))
    return out


def settings_of(name: str, tmp_path: Path) -> Settings:
    return settings_from(CONFIG.read_text(), tmp_path, env_of(name))


def listeners(value: str) -> dict[str, str]:
    """'NAME://host:port,...' -> {NAME: 'host:port'}."""
    return {item.split("://")[0]: item.split("://")[1] for item in value.split(",")}


def test_kafka_has_an_internal_listener_for_containers_and_an_external_one_advertised_to_the_host() -> None:
    env = env_of("kafka")
    bound = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert set(bound) == {"INTERNAL", "EXTERNAL", "CONTROLLER"} and set(bound) <= set(protocols)
    assert set(advertised) == {"INTERNAL", "EXTERNAL"}, "the controller listener is never advertised"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == "INTERNAL"
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    # internal: the service name and the port the listener binds
    host, port = advertised["INTERNAL"].split(":")
    assert host == "kafka" and bound["INTERNAL"] == f":{port}"
    assert int(port) not in published("kafka"), "the internal listener stays inside the compose network"
    # external: advertised as localhost on the port published for it, the same on both sides
    ext_host, ext_port = advertised["EXTERNAL"].split(":")
    assert ext_host == "localhost" and bound["EXTERNAL"] == f":{ext_port}"
    assert published("kafka")[int(ext_port)][0] == int(ext_port)
    assert advertised["INTERNAL"] in service("kafka")["healthcheck"]["test"][-1]


def test_every_leadrelay_container_talks_to_the_internal_listener(tmp_path: Path) -> None:
    internal = listeners(env_of("kafka")["KAFKA_ADVERTISED_LISTENERS"])["INTERNAL"]
    for name in (*LEADRELAY, "topics", "loadgen"):
        assert_known_settings(list(env_of(name)), name)
        assert settings_of(name, tmp_path).bootstrap_servers == internal, name


def test_each_process_serves_metrics_and_health_on_its_own_published_port(tmp_path: Path) -> None:
    host_ports = []
    for name in LEADRELAY:
        settings = settings_of(name, tmp_path)
        assert settings.web_host == "0.0.0.0", name
        ports = published(name)
        assert settings.web_port in ports, f"{name}: web port {settings.web_port} not published"
        host_ports.append(ports[settings.web_port][0])
        if not name.startswith("worker"):  # workers run the image's default command
            assert service(name)["command"][0] == name
    assert len(set(host_ports)) == len(host_ports), f"host ports collide: {host_ports}"
    assert host_ports[:2] == [6066, 6067]
    # Prometheus scrapes each of them on its web port
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in prometheus["scrape_configs"] for t in job["static_configs"][0]["targets"]}
    in_network = {f"{n}:{settings_of(n, tmp_path).web_port}" for n in LEADRELAY}
    assert targets == in_network


def test_the_ingress_api_is_published_for_crms_and_web_forms(tmp_path: Path) -> None:
    settings = settings_of("ingress", tmp_path)
    assert service("ingress")["command"] == ["ingress"]
    assert settings.ingress_host == "0.0.0.0"
    assert published("ingress")[settings.ingress_port] == (8080, "")
    mounts = {v.split(":")[1]: v.split(":")[0] for v in service("ingress")["volumes"]}
    sources = Path(mounts[str(settings.ingress_sources_file)])
    assert sources.exists() and load_sources(sources), "the mounted sources file is one the ingress accepts"


def test_the_sink_has_a_crm_to_deliver_to(tmp_path: Path) -> None:
    settings = settings_of("sink", tmp_path)
    assert service("sink")["command"] == ["sink", "webhook"]
    assert settings.sink_url and target_of(settings)  # what `sink webhook` checks before it starts
    assert settings.sink_group_id != settings.app_id != settings.archive_group_id


def test_the_archive_writes_to_the_postgres_service(tmp_path: Path) -> None:
    settings = settings_of("archive", tmp_path)
    assert service("archive")["command"] == ["archive"]
    url = urlsplit(settings.archive_url)
    pg = env_of("postgres")
    assert url.scheme == "postgresql" and url.hostname == "postgres" and url.port == 5432
    assert url.username == pg["POSTGRES_USER"] and url.path == "/" + pg["POSTGRES_DB"]
    assert url.password is None and settings.archive_password is not None
    assert settings.archive_password.get_secret_value() == pg["POSTGRES_PASSWORD"]
    assert service("archive")["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(service("postgres")["healthcheck"]["test"])
    assert published("postgres")[5432] == (5432, "127.0.0.1"), "PostgreSQL only on the host's loopback"
    assert any(
        v.endswith(":/var/lib/postgresql/data:rw") or v.endswith(":/var/lib/postgresql/data")
        for v in service("postgres")["volumes"]
    )


def test_every_service_waits_for_kafka_and_the_topics() -> None:
    for name in LEADRELAY:
        depends = service(name)["depends_on"]
        assert depends["kafka"]["condition"] == "service_healthy", name
        assert depends["topics"]["condition"] == "service_completed_successfully", name
