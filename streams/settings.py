"""The one settings object: defaults, then an optional YAML/JSON file, then LEADRELAY_* environment."""

from __future__ import annotations

import difflib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints, ValidationError

from routing.territory import TerritoryRule
from schemas.events import PoolId

ENV_PREFIX = "LEADRELAY_"
CONFIG_FILE_ENV = "LEADRELAY_CONFIG_FILE"
# Settings of leadrelay 0.1's Faust runtime, gone with it: named, so a leftover gets a precise warning.
REMOVED = {
    f"LEADRELAY_{name}": "removed with the Faust runtime: one Kafka transaction per batch needs none of it"
    for name in (
        "RUNTIME",
        "PROCESSING_GUARANTEE",
        "STANDBY_REPLICAS",
        "STORE",
        "REBUILD_AFTER_CRASH",
        "COMMIT_INTERVAL_SECONDS",
    )
}
# LEADRELAY_* variables that are not settings but are read elsewhere: the local broker (streams/tools/localkafka.py)
# and the test and chaos suites (tests/conftest.py, tests/chaos/conftest.py). Not warned about.
OTHER_ENV = frozenset(
    {
        CONFIG_FILE_ENV,
        "LEADRELAY_STATE",
        "LEADRELAY_CACHE",
        "LEADRELAY_TEST_BOOTSTRAP",
        "LEADRELAY_CHAOS_SCALE",
        "LEADRELAY_CHAOS_RESULTS",
    }
)

SQLITE_PREFIX = "sqlite:///"  # archive_url of the embedded archive: the rest is the database file

log = logging.getLogger("leadrelay.settings")


def _env(name: str) -> str:
    return ENV_PREFIX + name.upper()


_PATH_FIELDS = (
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
    "data_dir",
    "default_policy_file",
    "roster_file",
    "ingress_sources_file",
    "ingress_tls_certfile",
    "ingress_tls_keyfile",
    "sink_owner_map_file",
    "sink_record_map_file",
)


def _relative_to(values: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths in a config file are relative to the file, wherever the worker is started."""
    out = dict(values)
    for name in _PATH_FIELDS:
        if isinstance(out.get(name), str) and not Path(out[name]).is_absolute():
            out[name] = str(base / out[name])
    url = out.get("archive_url")
    if isinstance(url, str) and url.startswith(SQLITE_PREFIX) and not Path(url[len(SQLITE_PREFIX) :]).is_absolute():
        out["archive_url"] = SQLITE_PREFIX + str(base / url[len(SQLITE_PREFIX) :])
    if isinstance(out.get("policy_files"), list):
        out["policy_files"] = [p if Path(p).is_absolute() else str(base / p) for p in out["policy_files"]]
    return out


class SettingsError(ValueError):
    """Configuration that cannot run: names the field and the source (file or variable)."""


class Settings(BaseModel):
    """Every field can be set in the config file or by the environment variable LEADRELAY_<FIELD>."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Kafka connection
    app_id: str = Field("leadrelay", description="Consumer group id and prefix of internal topics")
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism when the protocol is SASL_*"
    )
    sasl_username: str | None = Field(None, description="SASL user name")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged)")
    ssl_cafile: Path | None = Field(None, description="CA bundle to verify the brokers")
    ssl_certfile: Path | None = Field(None, description="Client certificate for mutual TLS")
    ssl_keyfile: Path | None = Field(None, description="Client key for mutual TLS")

    # Topics
    topic_leads_new: str = Field("leads.new", description="Input: new leads")
    topic_leads_updated: str = Field(
        "leads.updated", description="Input: new versions of known leads (key lead_id): kept, re-decided or moved"
    )
    topic_deals_closed: str = Field("deals.closed", description="Input: won/lost deals")
    topic_lead_activity: str = Field(
        "leads.activity", description="Input: what reps did with their leads (touches, closes; key lead_id)"
    )
    topic_claims: str = Field("leads.claims", description="Input: reps' claims on open-pool leads (key lead_id)")
    topic_claim_results: str = Field(
        "leads.claim-results", description="Output: the one answer to each claim (key lead_id)"
    )
    topic_reps_roster: str = Field("reps.roster", description="Input: rep profiles (compacted, key rep_id)")
    topic_policies: str = Field("routing.policies", description="Input: policies (compacted, key pool)")
    topic_assignments: str = Field("leads.assignments", description="Output: decisions (key lead_id)")
    topic_dlq: str = Field("leads.dlq", description="Output: rejected input with reason headers")
    topic_sink_dlq: str = Field(
        "leads.sink.dlq", description="Output of `sink webhook`: decisions the CRM refused, with the response"
    )
    partitions: Annotated[int, Field(ge=1, le=1024)] = Field(
        4, description="Partitions of every topic leadrelay creates (pool/lead co-partitioning needs one count)"
    )
    replication_factor: Annotated[int, Field(ge=1)] = Field(1, description="Replication of created topics")
    create_topics: bool = Field(True, description="Create missing topics at start-up")

    # Consumer group behaviour (the runtime's consumer); defaults suit a worker that never blocks.
    max_poll_interval_seconds: Annotated[float, Field(gt=0)] = Field(
        300, description="A worker silent this long is dropped from the group and its partitions move"
    )
    session_timeout_seconds: Annotated[float, Field(gt=0)] = Field(
        30, description="Heartbeat session timeout: how fast a dead worker's partitions move"
    )
    producer_linger_ms: Annotated[float, Field(ge=0, le=1000)] = Field(
        5, description="How long sends wait to be batched: throughput for a few ms of latency"
    )

    # State and web
    data_dir: Path = Field(Path(".state/worker"), description="Directory of the local table store")
    web_host: str = Field("127.0.0.1", description="Bind address of /metrics and health endpoints")
    web_port: Annotated[int, Field(ge=1, le=65535)] = Field(6066, description="Port of the web server")

    # Metrics (label cardinality bounds; see streams/web/metrics.py)
    metrics_max_pools: Annotated[int, Field(ge=1)] = Field(
        200, description="Pools that get their own metric series; later pools are folded/dropped and counted"
    )
    metrics_per_rep: bool = Field(False, description="Export per-rep load gauges (leadrelay_rep_*)")
    metrics_max_reps: Annotated[int, Field(ge=0)] = Field(
        500, description="Most (pool, rep) pairs with per-rep series when metrics_per_rep is on"
    )

    # Routing
    default_pool: PoolId = Field("default", description="Pool of leads that no explicit pool or rule places")
    territory_rules: list[TerritoryRule] = Field(
        default_factory=list,
        description="Ordered pool rules (JSON list; `pool` or a weighted `split`); first match wins",
    )
    default_policy_file: Path | None = Field(
        None, description="YAML/JSON policy for pools without one of their own (built-in: least loaded)"
    )
    policy_files: list[Path] = Field(
        default_factory=list, description="Policy files (each naming its pool) published at start (JSON list)"
    )
    roster_file: Path | None = Field(None, description="JSON/JSONL roster published to the roster topic at start")
    ledger_retention_days: Annotated[float, Field(gt=0)] = Field(
        30, description="Days a closed lead stays in the ledger (dedupe horizon for late duplicates)"
    )
    index_retention_days: Annotated[float, Field(gt=0)] = Field(
        180, description="Days a lead stays findable by pool-less deals after its decision"
    )
    unknown_lead_wait_seconds: Annotated[float, Field(ge=0)] = Field(
        300, description="How long a deal or activity waits for its lead's decision before going to the DLQ"
    )
    dedupe_secret: SecretStr | None = Field(
        None,
        min_length=16,
        description="Key of the HMAC that turns a lead's e-mail, phone and company domain into dedupe keys (the"
        " same on every worker; never logged). Unset: leads carry no keys and a policy's `dedupe` finds nothing",
    )
    housekeeping_interval_seconds: Annotated[float, Field(gt=0)] = Field(
        30, description="How often expired ledger entries and parked deals are swept"
    )
    max_payload_bytes: Annotated[int, Field(ge=256)] = Field(
        65536, description="Larger input records go to the DLQ as payload_too_large"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level")

    # HTTP ingress (`leadrelay ingress`, streams/ingress/): its API port; /metrics stays on web_port.
    ingress_host: str = Field("127.0.0.1", description="Bind address of the ingress API")
    ingress_port: Annotated[int, Field(ge=1, le=65535)] = Field(8080, description="Port of the ingress API")
    ingress_sources_file: Path | None = Field(
        None, description="YAML/JSON mapping source name -> shared HMAC secret (required by `ingress`)"
    )
    ingress_replay_window_seconds: Annotated[float, Field(gt=0, le=3600)] = Field(
        300, description="A signed request is accepted this long either side of its timestamp, and only once"
    )
    ingress_tls_certfile: Path | None = Field(None, description="Server certificate (chain) of the ingress: HTTPS")
    ingress_tls_keyfile: Path | None = Field(None, description="Private key of ingress_tls_certfile")
    ingress_max_in_flight: Annotated[int, Field(ge=1)] = Field(
        2000, description="Records awaiting Kafka's acknowledgement; more are answered 429"
    )
    ingress_max_batch_lines: Annotated[int, Field(ge=1, le=100_000)] = Field(
        500, description="Most JSON lines in one batch POST"
    )
    ingress_ack_timeout_seconds: Annotated[float, Field(gt=0)] = Field(
        10, description="How long a request waits for Kafka's acknowledgement before it is answered 503"
    )

    # CRM delivery (`leadrelay sink webhook`, streams/sink/)
    sink_group_id: str = Field("leadrelay-sink", description="Consumer group of the sink (its own offsets)")
    sink_template: Literal["generic", "salesforce", "hubspot", "zoho"] = Field(
        "generic", description="Request shape: generic JSON webhook, or a CRM's owner update"
    )
    sink_url: str | None = Field(
        None, description="Webhook URL (generic) or the CRM's API base URL (required by `sink webhook`)"
    )
    sink_token: SecretStr | None = Field(None, description="Bearer / OAuth token sent to the CRM (never logged)")
    sink_signing_secret: SecretStr | None = Field(
        None, description="Generic webhook: sign each request like the ingress verifies (X-Leadrelay-Signature)"
    )
    sink_salesforce_api_version: Annotated[str, StringConstraints(pattern=r"^v[0-9]+\.[0-9]$")] = Field(
        "v60.0", description="Salesforce REST API version in the request path"
    )
    sink_owner_map_file: Path | None = Field(
        None, description="YAML/JSON mapping rep_id -> CRM owner id (unset: the rep_id is the owner id)"
    )
    sink_record_map_file: Path | None = Field(
        None, description="YAML/JSON mapping lead_id -> CRM record id (unset: the lead_id is the record id)"
    )
    sink_timeout_seconds: Annotated[float, Field(gt=0)] = Field(10, description="Timeout of one CRM request")
    sink_backoff_initial_seconds: Annotated[float, Field(gt=0)] = Field(
        0.5, description="First retry waits up to this long (full jitter, doubling per attempt)"
    )
    sink_backoff_max_seconds: Annotated[float, Field(gt=0)] = Field(
        60, description="Longest wait between two attempts (also caps Retry-After)"
    )
    sink_give_up_seconds: Annotated[float, Field(gt=0)] = Field(
        3600, description="A decision still failing after this long is dead-lettered as retries_exhausted"
    )

    # Archive (`leadrelay archive` and `leadrelay export`, streams/archive/)
    archive_url: Annotated[str, StringConstraints(pattern=r"^(sqlite:///.+|postgres(ql)?://.+)$")] = Field(
        "sqlite:///.state/archive.sqlite3",
        description="Archive database: sqlite:///<file> (embedded, relative to the working directory or config file) "
        "or postgresql://user@host:port/db",
    )
    archive_password: SecretStr | None = Field(
        None, description="PostgreSQL password of the archive (never logged; keep it out of archive_url)"
    )
    archive_group_id: str = Field("leadrelay-archive", description="Consumer group of the archive (its own offsets)")
    archive_batch_max_records: Annotated[int, Field(ge=1, le=100_000)] = Field(
        500, description="Most records written to the database in one transaction (then offsets are committed)"
    )

    @property
    def broker_url(self) -> str:
        return ",".join(f"kafka://{s.strip()}" for s in self.bootstrap_servers.split(",") if s.strip())

    @classmethod
    def env_var(cls, field: str) -> str:
        return _env(field)

    @classmethod
    def from_env(cls, environ: Mapping[str, str], file: Path | None = None) -> Settings:
        """Build from a config file (explicit, or LEADRELAY_CONFIG_FILE) overlaid with LEADRELAY_* vars."""
        cls.warn_unknown(environ)
        data: dict[str, Any] = {}
        path = file or (Path(environ[CONFIG_FILE_ENV]) if environ.get(CONFIG_FILE_ENV) else None)
        if path is not None:
            try:
                loaded = yaml.safe_load(path.read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise SettingsError(f"config file {path}: {exc}") from None
            if not isinstance(loaded, dict):
                raise SettingsError(f"{path}: expected a mapping of settings")
            data.update(_relative_to(loaded, path.parent))
        for name, field in cls.model_fields.items():
            raw = environ.get(_env(name))
            if raw is None:
                continue
            is_structured = field.annotation is not None and "list[" in str(field.annotation)
            try:
                data[name] = json.loads(raw) if is_structured else raw
            except json.JSONDecodeError as exc:
                raise SettingsError(f"{_env(name)}: not valid JSON: {exc.msg}") from None
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            source = _env(str(first["loc"][0])) if first["loc"] else "settings"
            # A secret's validation error carries its input: not chained, so no traceback prints it.
            failed = cls.model_fields.get(str(first["loc"][0])) if first["loc"] else None
            cause = None if failed is not None and "SecretStr" in str(failed.annotation) else exc
            raise SettingsError(f"invalid setting {where} ({source} or config file): {first['msg']}") from cause

    @classmethod
    def warn_unknown(cls, environ: Mapping[str, str]) -> list[str]:
        """Log a warning for each LEADRELAY_* variable that nothing reads (a misspelt setting would otherwise
        be ignored silently), naming the closest known one. Returns the unknown names."""
        known = sorted({_env(name) for name in cls.model_fields} | OTHER_ENV)
        unknown = sorted(n for n in environ if n.upper().startswith(ENV_PREFIX) and n not in known)
        cut = len(ENV_PREFIX)  # compare what follows the prefix: the shared prefix would make anything "close"
        for name in unknown:
            if name.upper() in REMOVED:
                log.warning("%s is ignored: %s (docs/operations.md, upgrading from 0.1)", name, REMOVED[name.upper()])
                continue
            close = difflib.get_close_matches(name.upper()[cut:], [k[cut:] for k in known], n=1)
            hint = f"; did you mean {ENV_PREFIX}{close[0]}?" if close else ""
            log.warning("%s is not a leadrelay setting and is ignored%s", name, hint)
        return unknown

    @classmethod
    def namespaced_topics(cls, prefix: str) -> dict[str, str]:
        """LEADRELAY_TOPIC_* variables putting every topic under `prefix.` (demo runs, tests, benches).

        Derived from the fields, so a new topic setting can never be left shared by accident.
        """
        return {
            _env(name): f"{prefix}.{field.default}"
            for name, field in cls.model_fields.items()
            if name.startswith("topic_")
        }

    def with_overrides(self, **values: Any) -> Settings:
        return type(self).model_validate({**self.model_dump(), **values})
