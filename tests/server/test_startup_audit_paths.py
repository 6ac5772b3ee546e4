"""An audit file that cannot be written stops the start before anything is set up."""

from __future__ import annotations

from pathlib import Path

from tests.server.conftest import run_server


def test_an_audit_file_whose_directory_cannot_exist_is_refused_before_the_dev_set_up(
    tmp_path: Path, port: int
) -> None:
    """It was refused only once dev mode had initialised and provisioned the store, and
    named the device, not the setting."""
    data = tmp_path / "data"
    done = run_server(
        ["--dev", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}"],
        env={"MEDSECRETS_AUDIT_FILE": "/proc/no-such-dir/audit.jsonl"},
        cwd=tmp_path,
    )
    assert done.code == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "medsecrets server: config error: setting 'audit.file': cannot create the directory "
        "'/proc/no-such-dir' (No such file or directory)"
    )
    assert "provisioned" not in done.stderr
    assert not (data / "medsecrets.db").exists()


def test_an_audit_device_under_a_file_is_refused_naming_the_device(
    tmp_path: Path, port: int
) -> None:
    plain = tmp_path / "not-a-dir"
    plain.write_text("")
    config = tmp_path / "server.toml"
    config.write_text(
        f'[[audit.device]]\ntype = "file"\nname = "main"\npath = "{plain}/audit.jsonl"\n'
    )
    data = tmp_path / "data"
    done = run_server(
        ["--dev", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}",
         "--config", str(config)],
        cwd=tmp_path,
    )  # fmt: skip
    assert done.code == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "medsecrets server: config error: setting 'audit.device' 'main': "
        f"{str(plain)!r} is not a directory"
    )
    assert not (data / "medsecrets.db").exists()
