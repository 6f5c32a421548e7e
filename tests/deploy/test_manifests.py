"""deploy/: Kubernetes manifests against the API schemas, the compose file against the compose spec and
docker-compose, the Dockerfile's promises, and every setting they pass is one the worker knows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from streams.settings import CONFIG_FILE_ENV, Settings
from streams.tools.localkafka import KAFKA_VERSION
from tests.deploy.observability import DEPLOY, ROOT, tool

K8S = DEPLOY / "k8s"
COMPOSE = DEPLOY / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
CONFIG = DEPLOY / "config" / "settings.yaml"
# Oldest Kubernetes we support and the newest the validator knows.
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
STATE_DIR = "/var/lib/leadrelay"
UID = 10001


def k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [
        (path, doc)
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def k8s_kind(kind: str) -> dict[str, Any]:
    [doc] = [doc for _, doc in k8s_docs() if doc["kind"] == kind]
    return doc


def assert_known_settings(env_names: list[str], where: str) -> None:
    fields = {Settings.env_var(name) for name in Settings.model_fields} | {CONFIG_FILE_ENV}
    for name in env_names:
        if name.startswith("LEADRELAY_"):
            assert name in fields, f"{where}: {name} is not a leadrelay setting"


def settings_from(config_text: str, tmp_path: Path, env: dict[str, str]) -> Settings:
    path = tmp_path / "settings.yaml"
    path.write_text(config_text)
    return Settings.from_env({**env, CONFIG_FILE_ENV: str(path)})


# --- Kubernetes ----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_pass_strict_schema_validation(version: str) -> None:
    docs = k8s_docs()
    assert {doc["kind"] for _, doc in docs} >= {"StatefulSet", "Service", "ConfigMap", "PodDisruptionBudget", "Job"}
    for _, doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)  # raises with the offending field


def test_k8s_validator_rejects_a_misspelled_field() -> None:
    """Guard the guard: strict validation catches a typo that kubectl would silently drop."""
    sts = k8s_kind("StatefulSet")
    broken = {**sts, "spec": {**sts["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    on_disk = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk


def test_statefulset_keeps_state_probes_health_and_runs_unprivileged(tmp_path: Path) -> None:
    sts = k8s_kind("StatefulSet")
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    [worker] = pod["containers"]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    # RocksDB state on a per-pod volume, at the data dir's parent
    [claim] = spec["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == STATE_DIR
    assert env["LEADRELAY_DATA_DIR"].startswith(STATE_DIR + "/")
    # config from the ConfigMap
    config_volume = next(v for v in pod["volumes"] if v["name"] == "config")
    assert config_volume["configMap"]["name"] == k8s_kind("ConfigMap")["metadata"]["name"]
    assert env[CONFIG_FILE_ENV] == mounts["config"] + "/settings.yaml"
    # probes on the worker's web port
    port = next(p for p in worker["ports"] if p["name"] == "http")["containerPort"]
    assert env["LEADRELAY_WEB_PORT"] == str(port) and env["LEADRELAY_WEB_HOST"] == "0.0.0.0"
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert sts["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    # resources and an unprivileged, read-only container
    assert worker["resources"]["requests"]["cpu"] and worker["resources"]["limits"]["memory"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == UID
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["terminationGracePeriodSeconds"] >= 30
    # the headless service governs the set and selects its pods
    service = k8s_kind("Service")
    assert spec["serviceName"] == service["metadata"]["name"] and service["spec"]["clusterIP"] == "None"
    labels = spec["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert_known_settings(list(env), "statefulset.yaml")


def test_workers_never_outnumber_partitions(tmp_path: Path) -> None:
    """Scaling by partitions: one consumer group, so replicas beyond `partitions` would sit idle."""
    config = k8s_kind("ConfigMap")["data"]["settings.yaml"]
    settings = settings_from(config, tmp_path, {})
    replicas = k8s_kind("StatefulSet")["spec"]["replicas"]
    assert replicas >= 1
    assert replicas <= settings.partitions, "a worker beyond the partition count would sit idle"


def test_configmap_carries_the_deploy_settings_file(tmp_path: Path) -> None:
    config = k8s_kind("ConfigMap")["data"]["settings.yaml"]
    assert config == CONFIG.read_text()
    settings = settings_from(config, tmp_path, {})
    assert settings.create_topics is False  # the topics Job provisions them
    assert settings.sasl_password is None  # secrets come from the Secret, never the ConfigMap


def test_topics_job_runs_the_topics_command_with_the_same_config() -> None:
    job = k8s_kind("Job")
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["topics"]
    sts_env = {e["name"]: e for e in k8s_kind("StatefulSet")["spec"]["template"]["spec"]["containers"][0]["env"]}
    for entry in container["env"]:
        assert sts_env[entry["name"]] == entry, entry["name"]
    assert_known_settings([e["name"] for e in container["env"]], "topics-job.yaml")


# --- docker compose ------------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def test_compose_file_matches_the_compose_spec() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_spec_check_rejects_a_broken_file(tmp_path: Path) -> None:
    """Guard the guard: a misspelled service key fails the same check."""
    bad = tmp_path / "compose.yml"
    bad.write_text(COMPOSE.read_text().replace("    restart: unless-stopped\n", "    restrat: unless-stopped\n", 1))
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0 and "restrat" in proc.stdout + proc.stderr


def test_docker_compose_config_accepts_it() -> None:
    """docker-compose resolves anchors, merges and references (undefined services, volumes) without a daemon."""
    proc = subprocess.run(
        [tool("docker-compose"), "-f", str(COMPOSE), "--profile", "demo", "config", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=DEPLOY,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_topology(tmp_path: Path) -> None:
    services = compose()["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    workers = sorted(name for name in services if name.startswith("worker-"))
    assert len(workers) == 2
    states = set()
    for name in workers:
        worker = services[name]
        assert worker["build"]["dockerfile"] == "deploy/Dockerfile"
        assert worker["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        mounts = [m for m in worker["volumes"] if m.endswith(":" + STATE_DIR)]
        assert len(mounts) == 1, f"{name}: state dir is not a volume"
        states.add(mounts[0].split(":")[0])
        assert_known_settings(list(worker["environment"]), name)
        settings = settings_from(CONFIG.read_text(), tmp_path, {k: str(v) for k, v in worker["environment"].items()})
        assert str(settings.data_dir).startswith(STATE_DIR + "/")
        assert settings.web_host == "0.0.0.0"
    assert len(states) == 2, "each worker needs its own state volume"
    assert states <= set(compose()["volumes"])
    assert services["topics"]["command"] == ["topics"]
    # Prometheus scrapes exactly the workers, on their web port, as job "leadrelay" (the alerts' job)
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    [job] = [j for j in prometheus["scrape_configs"] if j["job_name"] == "leadrelay"]
    assert sorted(job["static_configs"][0]["targets"]) == [f"{w}:6066" for w in workers]
    # every mounted file exists in the repository
    for service in services.values():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), f"{mount}: {source} missing"


# --- Dockerfile ----------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_is_multistage_non_root_with_a_state_volume() -> None:
    steps = dockerfile_instructions()
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) >= 2 and froms[0].endswith("AS build") and froms[-1].endswith("AS runtime")
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1].split(":")[0] in ("${UID}", str(UID)) and f"ARG UID={UID}" in DOCKERFILE.read_text()
    assert ("VOLUME", f'["{STATE_DIR}"]') in final
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert f"LEADRELAY_DATA_DIR={STATE_DIR}/" in env and "LEADRELAY_WEB_HOST=0.0.0.0" in env
    assert any(word == "HEALTHCHECK" and "/healthz" in rest for word, rest in final)
    assert ("ENTRYPOINT", '["leadrelay"]') in final
    # only pip from PyPI: no other index, no downloads of our own
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "pip install" in runs
    # the tested versions: the lock constrains the image's install
    assert "pip install --constraint requirements.lock ." in runs
    for banned in ("--index-url", "--extra-index-url", "curl ", "wget ", "--trusted-host"):
        assert banned not in runs


def test_dockerfile_copies_exist_and_the_context_is_filtered() -> None:
    for word, rest in dockerfile_instructions():
        if word == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), source
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[ignore.index("*") + 1 :][:1], "context should start from nothing and re-include sources"
    packages = re.findall(r"include = \[(.*?)\]", (ROOT / "pyproject.toml").read_text())[0]
    for package in re.findall(r'"(\w+)\*"', packages):
        assert f"!{package}" in ignore, f"{package} is installed but not sent to the build"
        assert f"COPY {package} ./{package}" in DOCKERFILE.read_text()
