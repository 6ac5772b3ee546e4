"""Settings: TOML + MEDSECRETS_* + flags, typed, validated, one line naming the setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medsecrets.errors import ConfigError
from medsecrets.monitor.detectors import DetectorConfig
from medsecrets.server.config import SETTING_NAMES, Settings, env_var, load_settings


def _load(
    tmp_path: Path,
    toml: str | None = None,
    *,
    env: dict[str, str] | None = None,
    **overrides: object,
) -> Settings:
    config = None
    if toml is not None:
        config = tmp_path / "medsecrets.toml"
        config.write_text(toml)
    names = {k.replace("__", "."): v for k, v in overrides.items()}
    return load_settings(str(config) if config else None, env=env or {}, overrides=names)


def test_dev_defaults(tmp_path: Path) -> None:
    settings = _load(tmp_path, dev=True)
    assert settings.listen == "127.0.0.1:8200"
    assert settings.public_addr == "http://127.0.0.1:8200"
    assert settings.data_dir == os.path.abspath(".medsecrets")
    assert settings.storage.type == "sqlite"
    assert settings.storage.path == os.path.join(settings.data_dir, "medsecrets.db")
    assert settings.backend == "granian"
    assert settings.workers == 1
    assert settings.max_body_bytes == 1_048_576
    assert settings.seal.type is None
    assert settings.header_read_timeout == 5.0
    assert settings.max_connections == 1024
    assert settings.listen_backlog == 1024


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    toml = 'dev = true\nworkers = 1\nlog_level = "debug"\nlisten = "127.0.0.1:9000"\n'
    toml += '[storage]\npath = "db/file.db"\n'
    settings = _load(tmp_path, toml)
    assert settings.log_level == "debug"
    assert settings.listen == "127.0.0.1:9000"
    assert settings.storage.path == os.path.abspath("db/file.db")
    env = {"MEDSECRETS_LISTEN": "127.0.0.1:9001", "MEDSECRETS_LOG_LEVEL": "warning"}
    assert _load(tmp_path, toml, env=env).listen == "127.0.0.1:9001"
    flagged = _load(tmp_path, toml, env=env, listen="127.0.0.1:9002")
    assert flagged.listen == "127.0.0.1:9002"
    assert flagged.log_level == "warning"


def test_every_setting_has_an_env_var(tmp_path: Path) -> None:
    assert env_var("storage.dsn") == "MEDSECRETS_STORAGE_DSN"
    assert env_var("shutdown_grace_period") == "MEDSECRETS_SHUTDOWN_GRACE_PERIOD"
    docs = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    for name in SETTING_NAMES:
        assert f"`{name}`" in docs, name
        assert f"`{env_var(name)}`" in docs, name


def test_env_values_are_typed(tmp_path: Path) -> None:
    env = {
        "MEDSECRETS_DEV": "yes",
        "MEDSECRETS_WORKERS": "1",
        "MEDSECRETS_REQUEST_TIMEOUT": "2.5",
        "MEDSECRETS_HEADER_READ_TIMEOUT": "0.5",
        "MEDSECRETS_MAX_CONNECTIONS": "64",
        "MEDSECRETS_LISTEN_BACKLOG": "4096",
        "MEDSECRETS_TLS_DISABLE": "off",
        "MEDSECRETS_CATALOG_FILE": "",  # empty counts as unset
    }
    settings = _load(tmp_path, env=env)
    assert settings.dev is True
    assert settings.request_timeout == 2.5
    assert settings.header_read_timeout == 0.5
    assert settings.max_connections == 64
    assert settings.listen_backlog == 4096
    assert settings.tls_disable is False
    assert settings.catalog_file is None


def test_unknown_env_warns_client_env_is_silent(tmp_path: Path) -> None:
    env = {
        "MEDSECRETS_ADDR": "http://x",
        "MEDSECRETS_TOKEN": "t",
        "MEDSECRETS_DEBUG": "1",
        "MEDSECRETS_WROKERS": "2",
    }
    settings = _load(tmp_path, env=env, dev=True)
    assert settings.warnings == (
        "ignoring environment variable MEDSECRETS_WROKERS: no such server setting",
    )
    assert settings.workers == 1


@pytest.mark.parametrize(
    ("toml", "env", "setting"),
    [
        ("workers = 0", {}, "workers"),
        ("", {"MEDSECRETS_WORKERS": "many"}, "workers"),
        ('listen = "8200"', {}, "listen"),
        ('listen = "127.0.0.1:99999"', {}, "listen"),
        ("", {"MEDSECRETS_LISTEN": "[zz]:1"}, "listen"),
        ('log_level = "loud"', {}, "log_level"),
        ("max_body_bytes = 10", {}, "max_body_bytes"),
        ("request_timeout = -1", {}, "request_timeout"),
        ('request_timeout = "soon"', {}, "request_timeout"),
        ("header_read_timeout = 0", {}, "header_read_timeout"),
        ("", {"MEDSECRETS_HEADER_READ_TIMEOUT": "forever"}, "header_read_timeout"),
        ("max_connections = 8", {}, "max_connections"),
        ("max_connections = 1e6", {}, "max_connections"),
        ("", {"MEDSECRETS_LISTEN_BACKLOG": "64"}, "listen_backlog"),
        ("listen_backlog = 100000", {}, "listen_backlog"),
        ("shutdown_grace_period = 99999", {}, "shutdown_grace_period"),
        ('backend = "nginx"', {}, "backend"),
        ("", {"MEDSECRETS_DEV": "maybe"}, "dev"),
        ("", {"MEDSECRETS_TLS_DISABLE": "maybe"}, "tls_disable"),
        ('[storage]\ntype = "mysql"', {}, "storage.type"),
        ('[storage]\ntype = "postgres"', {}, "storage.dsn"),
        ('[seal]\ntype = "awskms"', {}, "seal.kms_key_id"),
        ('[seal]\ntype = "rot13"', {}, "seal.type"),
        ('[tls]\ncert_file = "nope.pem"\nkey_file = "nope.pem"', {}, "tls.cert_file"),
        ("sweep_interval = 0", {}, "sweep_interval"),
        ('catalog_file = "missing.yaml"', {}, "catalog_file"),
        ("data_dir = 5", {}, "data_dir"),
        ("colour = true", {}, "colour"),
        ("[storage]\nflavour = 1", {}, "storage.flavour"),
        ('storage = "sqlite"', {}, "storage"),
        ("[monitor]\nrate_principal_limits = { alice = 0 }", {}, "monitor.rate_principal_limits"),
        ('[monitor]\nrate_category_limits = ["db"]', {}, "monitor.rate_category_limits"),
        (
            "",
            {"MEDSECRETS_MONITOR_RATE_CATEGORY_LIMITS": "database"},
            "monitor.rate_category_limits",
        ),
        ("", {"MEDSECRETS_MONITOR_RATE_PRINCIPAL_LIMITS": "=4"}, "monitor.rate_principal_limits"),
        ("[monitor]\nwarmup_days = -1", {}, "monitor.warmup_days"),
        ("[monitor]\nbulk_distinct = 0", {}, "monitor.bulk_distinct"),
        ('[monitor]\nnew_source_scope = "planet"', {}, "monitor.new_source_scope"),
    ],
)
def test_bad_setting_names_it(tmp_path: Path, toml: str, env: dict[str, str], setting: str) -> None:
    base = {"MEDSECRETS_DEV": "true"} | env
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, toml, env=base)
    message = caught.value.message
    assert f"'{setting}'" in message
    assert "\n" not in message


def test_detector_thresholds_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    toml = """dev = true
[monitor]
rate_threshold = 20
rate_window = 600
rate_principal_limits = { "svc-backup" = 500, alice = 5 }
rate_category_limits = { database = 8 }
bulk_distinct = 30
failed_denials = 4
warmup_days = 2.5
new_source_scope = "address"
repeat_after = 0
"""
    assert _load(tmp_path, toml).monitor.detectors == DetectorConfig(
        rate_limit=20,
        rate_window=600.0,
        rate_principal_limits={"svc-backup": 500, "alice": 5},
        rate_category_limits={"database": 8},
        bulk_distinct=30,
        failed_denials=4,
        warmup_days=2.5,
        new_source_scope="address",
        repeat_after=0.0,
    )
    env = {
        "MEDSECRETS_MONITOR_RATE_PRINCIPAL_LIMITS": "svc-a=7, svc-b = 9,",
        "MEDSECRETS_MONITOR_FAILED_DENIALS": "3",
        "MEDSECRETS_MONITOR_ENUMERATION_WINDOW": "30",
    }
    overridden = _load(tmp_path, toml, env=env).monitor.detectors
    assert overridden.rate_principal_limits == {"svc-a": 7, "svc-b": 9}
    assert (overridden.failed_denials, overridden.enumeration_window) == (3, 30.0)
    assert overridden.rate_category_limits == {"database": 8}  # the file's, kept
    assert _load(tmp_path, dev=True).monitor.detectors == DetectorConfig()


def test_source_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'workers' \(environment MEDSECRETS_WORKERS\)"):
        _load(tmp_path, env={"MEDSECRETS_WORKERS": "x", "MEDSECRETS_DEV": "1"})
    with pytest.raises(ConfigError, match=r"'workers' \(config file medsecrets.toml\)"):
        _load(tmp_path, "workers = -2\ndev = true")


def test_tls_required_outside_dev(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'tls.cert_file'.*TLS is required"):
        _load(tmp_path)
    assert _load(tmp_path, "tls_disable = true").tls_disable is True
    assert _load(tmp_path, dev=True).tls.enabled is False


def test_tls_pairs(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(ConfigError, match=r"'tls.key_file'"):
        _load(tmp_path, **{"tls__cert_file": str(cert)})
    with pytest.raises(ConfigError, match=r"'tls.cert_file'"):
        _load(tmp_path, **{"tls__key_file": str(cert)})
    both = _load(tmp_path, **{"tls__cert_file": str(cert), "tls__key_file": str(cert)})
    assert both.tls.enabled
    assert both.public_addr == "https://127.0.0.1:8200"


def test_dsn_is_never_echoed(tmp_path: Path) -> None:
    secret_dsn = "postgresql://u:CANARY-PASSWORD@db/x"
    settings = _load(
        tmp_path,
        '[storage]\ntype = "postgres"',
        env={"MEDSECRETS_STORAGE_DSN": secret_dsn},
        tls_disable=True,
    )
    assert "CANARY" not in repr(settings)
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, '[storage]\ntype = "postgres"\ndsn = 42\n', dev=False, tls_disable=True)
    assert "'storage.dsn'" in caught.value.message
    assert "42" not in caught.value.message


def test_config_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found"):
        load_settings(str(tmp_path / "missing.toml"), env={}, overrides={})
    bad = tmp_path / "bad.toml"
    bad.write_text("dev = = true")
    with pytest.raises(ConfigError, match=r"invalid TOML"):
        load_settings(str(bad), env={}, overrides={})
    for content, problem in (
        (b"\xff\xfe", "not UTF-8 text"),
        (b"x = " + b"[" * 100_000, "invalid TOML"),
        (b"# " + b"x" * (1 << 20) + b"\n", "larger than 1 MiB"),
    ):
        bad.write_bytes(content)
        with pytest.raises(ConfigError, match=problem):
            load_settings(str(bad), env={}, overrides={})


def test_dev_mode_rules(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'storage.type'"):
        _load(tmp_path, '[storage]\ntype = "postgres"\ndsn = "x"', dev=True)
    with pytest.raises(ConfigError, match=r"'seal.type'"):
        _load(tmp_path, '[seal]\ntype = "shamir"', dev=True)
    with pytest.raises(ConfigError, match=r"'workers'"):
        _load(tmp_path, 'workers = 2\n[seal]\ntype = "shamir"', tls_disable=True)
    with pytest.raises(ConfigError, match=r"'workers'"):
        _load(tmp_path, 'workers = 2\nbackend = "uvicorn"', dev=True)


def test_seal_defaults(tmp_path: Path) -> None:
    settings = _load(tmp_path, '[seal]\ntype = "keyfile"', dev=True, data_dir=str(tmp_path))
    assert settings.seal.key_file == str(tmp_path / "unseal.key")
    kms = _load(
        tmp_path,
        '[seal]\ntype = "awskms"\nkms_key_id = "alias/x"\nkms_endpoint_url = ""',
        tls_disable=True,
    )
    assert kms.seal.kms_key_id == "alias/x"
    assert kms.seal.kms_endpoint_url is None
    relative = _load(tmp_path, '[seal]\nkey_file = "rel.key"', dev=True)
    assert relative.seal.key_file == os.path.abspath("rel.key")  # dev mode records it


def test_listen_ipv6(tmp_path: Path) -> None:
    settings = _load(tmp_path, dev=True, listen="[::1]:8300")
    assert settings.host == "::1"
    assert settings.port == 8300
    assert settings.public_addr == "http://[::1]:8300"
    assert _load(tmp_path, dev=True, listen="0.0.0.0:1").public_addr == "http://127.0.0.1:1"
