"""streams.settings: defaults, file, environment (injected, never os.environ), and named errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from routing.territory import TerritoryRule
from streams.settings import CONFIG_FILE_ENV, OTHER_ENV, Settings, SettingsError


def test_defaults():
    s = Settings.from_env({})
    assert s == Settings()
    assert (s.app_id, s.bootstrap_servers, s.partitions, s.default_pool) == (
        "leadrelay",
        "127.0.0.1:9092",
        4,
        "default",
    )
    assert s.territory_rules == []
    assert s.max_payload_bytes == 65536
    assert s.ledger_retention_days == 30
    assert s.create_topics is True
    assert s.sasl_password is None
    assert s.broker_url == "kafka://127.0.0.1:9092"


@pytest.mark.parametrize(
    ("var", "raw", "field", "expected"),
    [
        ("LEADRELAY_PARTITIONS", "8", "partitions", 8),
        ("LEADRELAY_APP_ID", "relay-eu", "app_id", "relay-eu"),
        ("LEADRELAY_CREATE_TOPICS", "false", "create_topics", False),
        ("LEADRELAY_CREATE_TOPICS", "1", "create_topics", True),
        ("LEADRELAY_LEDGER_RETENTION_DAYS", "0.5", "ledger_retention_days", 0.5),
        ("LEADRELAY_LOG_LEVEL", "debug", "log_level", "debug"),
        ("LEADRELAY_DATA_DIR", "/var/lib/leadrelay", "data_dir", Path("/var/lib/leadrelay")),
        ("LEADRELAY_DEFAULT_POOL", "unrouted", "default_pool", "unrouted"),
        ("LEADRELAY_SECURITY_PROTOCOL", "SASL_SSL", "security_protocol", "SASL_SSL"),
    ],
)
def test_env_overrides(var, raw, field, expected):
    assert Settings.env_var(field) == var
    assert getattr(Settings.from_env({var: raw}), field) == expected


def test_env_names_are_prefixed_upper_case():
    assert Settings.env_var("topic_leads_new") == "LEADRELAY_TOPIC_LEADS_NEW"


def test_unrelated_and_unknown_variables_are_ignored(caplog):
    s = Settings.from_env({"PARTITIONS": "9", "LEADRELAY_NOT_A_SETTING": "x", "HOME": "/root"})
    assert s == Settings()
    assert [r.getMessage() for r in caplog.records] == [
        "LEADRELAY_NOT_A_SETTING is not a leadrelay setting and is ignored"
    ]


@pytest.mark.parametrize(
    ("var", "closest"),
    [
        ("LEADRELAY_PARTITONS", "LEADRELAY_PARTITIONS"),
        ("LEADRELAY_BOOTSTRAP_SERVER", "LEADRELAY_BOOTSTRAP_SERVERS"),
        ("leadrelay_app_id", "LEADRELAY_APP_ID"),
        ("LEADRELAY_CONFIG", "LEADRELAY_CONFIG_FILE"),
    ],
)
def test_a_misspelt_variable_is_warned_about_naming_the_closest_setting(caplog, var, closest):
    with caplog.at_level(logging.WARNING, logger="leadrelay.settings"):
        assert Settings.from_env({var: "3"}) == Settings()
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("leadrelay.settings", "WARNING", f"{var} is not a leadrelay setting and is ignored; did you mean {closest}?")
    ]


def test_settings_and_variables_read_elsewhere_are_not_warned_about(caplog, tmp_path):
    config = _write(tmp_path, "app_id: from-file\n")
    environ = {Settings.env_var(name): "" for name in ("sasl_username", "web_host")}
    environ |= {name: "1" for name in OTHER_ENV} | {CONFIG_FILE_ENV: str(config)}
    Settings.from_env(environ)
    assert Settings.warn_unknown(environ) == []
    assert not caplog.records


def test_secret_is_not_in_repr():
    s = Settings.from_env({"LEADRELAY_SASL_PASSWORD": "hunter2-secret"})
    assert s.sasl_password.get_secret_value() == "hunter2-secret"
    assert "hunter2-secret" not in repr(s)
    assert "hunter2-secret" not in s.model_dump_json()


def test_a_short_dedupe_secret_is_refused_without_quoting_it():
    assert Settings.from_env({"LEADRELAY_DEDUPE_SECRET": "x" * 16}).dedupe_secret is not None
    with pytest.raises(SettingsError, match="LEADRELAY_DEDUPE_SECRET") as caught:
        Settings.from_env({"LEADRELAY_DEDUPE_SECRET": "too-short-9f3"})
    assert "too-short-9f3" not in str(caught.value)
    assert caught.value.__cause__ is None, "a chained ValidationError would print the input in a traceback"
    with pytest.raises(SettingsError) as other:
        Settings.from_env({"LEADRELAY_PARTITIONS": "zero"})
    assert other.value.__cause__ is not None, "other settings keep their cause"


def test_broker_url_from_comma_separated_servers():
    s = Settings.from_env({"LEADRELAY_BOOTSTRAP_SERVERS": "k1:9092, k2:9093,,"})
    assert s.broker_url == "kafka://k1:9092,kafka://k2:9093"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "leadrelay.yaml"
    path.write_text(text)
    return path


def test_file_then_env_precedence(tmp_path):
    path = _write(tmp_path, "partitions: 6\napp_id: from-file\nweb_port: 7000\n")
    from_file = Settings.from_env({}, path)
    assert (from_file.partitions, from_file.app_id, from_file.web_port) == (6, "from-file", 7000)
    both = Settings.from_env({"LEADRELAY_PARTITIONS": "12"}, path)
    assert (both.partitions, both.app_id, both.web_port) == (12, "from-file", 7000)


def test_config_file_named_by_the_injected_environ(tmp_path):
    path = _write(tmp_path, "app_id: via-env-file\n")
    assert Settings.from_env({CONFIG_FILE_ENV: str(path)}).app_id == "via-env-file"
    # an explicit file wins over the variable
    other = tmp_path / "other.yaml"
    other.write_text("app_id: explicit\n")
    assert Settings.from_env({CONFIG_FILE_ENV: str(path)}, other).app_id == "explicit"


def test_empty_file_means_defaults(tmp_path):
    assert Settings.from_env({}, _write(tmp_path, "")) == Settings()


def test_file_must_be_a_mapping(tmp_path):
    with pytest.raises(SettingsError, match="expected a mapping"):
        Settings.from_env({}, _write(tmp_path, "- a\n- b\n"))


def test_territory_rules_from_file(tmp_path):
    path = _write(tmp_path, "territory_rules:\n  - pool: dach\n    match: {country: [DE, AT]}\n")
    assert Settings.from_env({}, path).territory_rules == [TerritoryRule(pool="dach", match={"country": ["DE", "AT"]})]


def test_territory_rules_from_json_env(tmp_path):
    rules = [
        {"name": "dach", "pool": "dach", "match": {"country": ["DE", "AT", "CH"]}},
        {"pool": "big", "min": {"estimated_value": 50000}},
    ]
    path = _write(tmp_path, "territory_rules:\n  - pool: from-file\n")
    s = Settings.from_env({"LEADRELAY_TERRITORY_RULES": json.dumps(rules)}, path)
    assert [r.pool for r in s.territory_rules] == ["dach", "big"]
    assert s.territory_rules[0].name == "dach"
    assert s.territory_rules[1].min == {"estimated_value": 50000.0}


@pytest.mark.parametrize(
    ("environ", "var"),
    [
        ({"LEADRELAY_PARTITIONS": "zero"}, "LEADRELAY_PARTITIONS"),
        ({"LEADRELAY_PARTITIONS": "0"}, "LEADRELAY_PARTITIONS"),
        ({"LEADRELAY_PARTITIONS": "2000"}, "LEADRELAY_PARTITIONS"),
        ({"LEADRELAY_PARTITIONS": ""}, "LEADRELAY_PARTITIONS"),
        ({"LEADRELAY_WEB_PORT": "70000"}, "LEADRELAY_WEB_PORT"),
        ({"LEADRELAY_LOG_LEVEL": "verbose"}, "LEADRELAY_LOG_LEVEL"),
        ({"LEADRELAY_SECURITY_PROTOCOL": "TLS"}, "LEADRELAY_SECURITY_PROTOCOL"),
        ({"LEADRELAY_MAX_PAYLOAD_BYTES": "10"}, "LEADRELAY_MAX_PAYLOAD_BYTES"),
        ({"LEADRELAY_LEDGER_RETENTION_DAYS": "0"}, "LEADRELAY_LEDGER_RETENTION_DAYS"),
        ({"LEADRELAY_CREATE_TOPICS": "perhaps"}, "LEADRELAY_CREATE_TOPICS"),
        ({"LEADRELAY_DEFAULT_POOL": "Not A Pool"}, "LEADRELAY_DEFAULT_POOL"),
        ({"LEADRELAY_TERRITORY_RULES": "{}"}, "LEADRELAY_TERRITORY_RULES"),
        ({"LEADRELAY_TERRITORY_RULES": '[{"pool": "Bad Pool"}]'}, "LEADRELAY_TERRITORY_RULES"),
        ({"LEADRELAY_TERRITORY_RULES": '[{"match": {}}]'}, "LEADRELAY_TERRITORY_RULES"),
    ],
)
def test_invalid_values_raise_settings_error_naming_the_variable(environ, var):
    with pytest.raises(SettingsError, match=var):
        Settings.from_env(environ)


def test_invalid_value_from_file_is_named_too(tmp_path):
    with pytest.raises(SettingsError, match="LEADRELAY_PARTITIONS or config file"):
        Settings.from_env({}, _write(tmp_path, "partitions: -1\n"))
    with pytest.raises(SettingsError, match="partitionz"):
        Settings.from_env({}, _write(tmp_path, "partitionz: 3\n"))


def test_settings_error_does_not_echo_the_value():
    with pytest.raises(SettingsError) as info:
        Settings.from_env({"LEADRELAY_SECURITY_PROTOCOL": "hunter2-not-a-protocol"})
    assert "hunter2-not-a-protocol" not in str(info.value)


def test_unknown_rule_field_is_rejected_at_start_up():
    with pytest.raises(SettingsError, match=r"territory_rules\.0 .*unknown lead field 'county'"):
        Settings.from_env({"LEADRELAY_TERRITORY_RULES": '[{"pool": "x", "match": {"county": ["DE"]}}]'})


def test_unknown_rule_field_error_names_the_variable():
    with pytest.raises(SettingsError, match="LEADRELAY_TERRITORY_RULES"):
        Settings.from_env({"LEADRELAY_TERRITORY_RULES": '[{"pool": "x", "match": {"county": ["DE"]}}]'})


def test_malformed_json_env_raises_settings_error_naming_the_variable():
    with pytest.raises(SettingsError, match="LEADRELAY_TERRITORY_RULES"):
        Settings.from_env({"LEADRELAY_TERRITORY_RULES": "[{'pool': 'x'}]"})  # single quotes: not JSON


def test_environ_is_injected_never_read_from_os(monkeypatch, tmp_path):
    path = _write(tmp_path, "app_id: from-os-file\n")
    monkeypatch.setenv("LEADRELAY_PARTITIONS", "9")
    monkeypatch.setenv("LEADRELAY_APP_ID", "from-os")
    monkeypatch.setenv(CONFIG_FILE_ENV, str(path))
    s = Settings.from_env({})
    assert (s.partitions, s.app_id) == (4, "leadrelay")
    assert Settings.from_env({"LEADRELAY_PARTITIONS": "3"}).partitions == 3


def test_with_overrides_revalidates():
    s = Settings().with_overrides(partitions=16, app_id="x")
    assert (s.partitions, s.app_id) == (16, "x")
    with pytest.raises(ValueError, match="partitions"):
        Settings().with_overrides(partitions=0)


def test_namespaced_topics_cover_every_topic_setting():
    env = Settings.namespaced_topics("ns")
    topic_fields = [name for name in Settings.model_fields if name.startswith("topic_")]
    assert sorted(env) == sorted(f"LEADRELAY_{name.upper()}" for name in topic_fields)
    namespaced = Settings.from_env(env)
    for name in topic_fields:
        assert getattr(namespaced, name) == f"ns.{Settings.model_fields[name].default}"
