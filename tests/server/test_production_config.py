"""Production settings a careful operator gets told about (found walking the production path).

- a config file that holds secrets (a webhook signing secret, an SMTP password, a DSN, a SIEM
  URL with credentials) and that other users may read is warned about at every start;
- an ``http`` audit device with a plain ``http://`` URL to a remote host, and a syslog device
  to a remote host, ship the audit trail in clear: warned about at every start;
- an encrypted file device loads with any seal (with Shamir its key is read after the unseal)
  (it needs its key at start, when a Shamir store is still sealed: the start used to get as
  far as opening the store and stop with a message naming no entry).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medsecrets.server.config import Settings, load_settings
from medsecrets.testing.serverproc import free_port

WEBHOOK = '[[alerts.channel]]\ntype = "webhook"\nurl = "https://soc.example/x"\nsecret = "{}"\n'
SECRET = "walkthrough-signing-secret-0123"


def load(tmp_path: Path, text: str, mode: int = 0o600) -> Settings:
    path = tmp_path / "server.toml"
    path.write_text('tls_disable = true\n[audit]\nfile = "a.jsonl"\n' + text, encoding="utf-8")
    path.chmod(mode)
    return load_settings(str(path), env={}, overrides={"data_dir": str(tmp_path / "d")})


@pytest.mark.parametrize(
    ("text", "setting"),
    [
        (WEBHOOK.format(SECRET), "alerts.channel[0].secret"),
        (
            '[[alerts.channel]]\ntype = "smtp"\nhost = "mail.example"\nsender = "a@b.example"\n'
            'recipients = ["c@d.example"]\nusername = "u"\npassword = "pw-0123456789"\n',
            "alerts.channel[0].password",
        ),
        ('[storage]\ndsn = "postgresql://u:pw@db/x"\n', "storage.dsn"),
        (
            '[[audit.device]]\ntype = "http"\nurl = "https://u:tok@siem.example/in"\n',
            "audit.device[0].url",
        ),
    ],
)
def test_a_config_file_with_secrets_that_others_may_read_is_warned_about(
    tmp_path: Path, text: str, setting: str
) -> None:
    warned = [w for w in load(tmp_path, text, 0o644).warnings if "other users" in w]
    assert len(warned) == 1
    assert setting in warned[0] and "0644" in warned[0] and "chmod 600" in warned[0]
    for value in (SECRET, "pw-0123456789", "postgresql://", "tok@"):
        assert value not in warned[0]
    # 0600 and 0640 (a group) are fine
    assert not [w for w in load(tmp_path, text, 0o600).warnings if "other users" in w]
    assert not [w for w in load(tmp_path, text, 0o640).warnings if "other users" in w]


def test_a_readable_config_file_without_secrets_is_not_warned_about(tmp_path: Path) -> None:
    text = '[[audit.device]]\ntype = "http"\nurl = "https://siem.example/in"\n'
    assert load(tmp_path, "[monitor]\nrate_threshold = 9\n" + text, 0o644).warnings == ()


@pytest.mark.parametrize(
    ("device", "clear"),
    [
        ('type = "http"\nurl = "http://siem.example/ingest"', True),
        ('type = "http"\nurl = "http://10.0.0.5:8088/ingest"', True),
        ('type = "http"\nurl = "https://siem.example/ingest"', False),
        ('type = "http"\nurl = "http://127.0.0.1:8088/ingest"', False),
        ('type = "http"\nurl = "http://[::1]:8088/ingest"', False),
        ('type = "syslog"\naddress = "udp://10.0.0.5:514"', True),
        ('type = "syslog"\naddress = "tcp://siem.example:514"', True),
        ('type = "syslog"\naddress = "tcp://127.0.0.1:514"', False),
        ('type = "syslog"\naddress = "/dev/log"', False),
    ],
)
def test_an_audit_device_that_ships_in_clear_over_a_network_is_warned_about(
    tmp_path: Path, device: str, clear: bool
) -> None:
    warnings = load(tmp_path, f"[[audit.device]]\n{device}\n").warnings
    assert [w for w in warnings if "in clear" in w] == (
        [next(w for w in warnings if "audit.device[0]" in w)] if clear else []
    )


def test_an_encrypted_file_device_loads_with_every_seal(tmp_path: Path) -> None:
    """With a Shamir seal the key is read after the unseal (``FileAuditDevice``'s
    deferred cipher); it used to be refused at load."""
    encrypted = (
        '[[audit.device]]\ntype = "file"\nname = "sealed"\npath = "s.jsonl"\n'
        'encrypt = "medessence/production/medical-encryption#audit_log_encryption_key"\n'
    )
    for seal in ('type = "shamir"', 'type = "keyfile"', 'type = "awskms"\nkms_key_id = "alias/x"'):
        assert load(tmp_path, f"[seal]\n{seal}\n" + encrypted).audit.devices[0].encrypt


@pytest.mark.parametrize("initialised", [False, True])
def test_an_encrypted_file_device_whose_key_cannot_be_read_names_its_entry(
    tmp_path: Path, initialised: bool
) -> None:
    """The start used to stop with "setting 'audit.device.encrypt': ... (sealed)" for a
    store never initialised, naming neither the entry nor what to do."""
    import subprocess
    import sys

    data = tmp_path / "data"
    config = tmp_path / "server.toml"
    head = (  # a port of its own: the default one may be another test's
        f'tls_disable = true\ndata_dir = "{data}"\nlisten = "127.0.0.1:{free_port()}"\n'
        '[seal]\ntype = "keyfile"\n'
    )
    first = f'[[audit.device]]\ntype = "file"\nname = "a"\npath = "{tmp_path / "a.jsonl"}"\n'
    second = first.replace('"a"', '"b"').replace("a.jsonl", "b.jsonl")
    key = 'encrypt = "medessence/production/medical-encryption#audit_log_encryption_key"\n'
    if initialised:
        from medsecrets.schema.seal import KeyFileSealConfig
        from medsecrets.storage.sqlite import SqliteStorage
        from medsecrets.store import SecretStore

        data.mkdir(mode=0o700)
        store = SecretStore(SqliteStorage(data / "medsecrets.db"))
        store.initialize(KeyFileSealConfig(str(tmp_path / "unseal.key")))
        store.close()
    config.write_text(head + first + second + key)
    config.chmod(0o600)
    done = subprocess.run(
        [sys.executable, "-m", "medsecrets.server", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "setting 'audit.device[1].encrypt'" in done.stderr
    if initialised:
        assert "'medessence/production/medical-encryption' (not_found)" in done.stderr
    else:
        assert "the store is not initialised yet" in done.stderr
