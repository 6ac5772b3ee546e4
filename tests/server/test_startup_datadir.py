"""The data directory: one server at a time, the server's own, never writable by everyone."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest

from medsecrets.testing.serverproc import ServerProcess
from tests.server.conftest import run_server

_NOBODY = 65534


def _refusal(stderr: str) -> str:
    assert "Traceback" not in stderr
    return stderr.strip().splitlines()[-1]


def test_a_second_server_on_the_same_data_dir_is_refused_before_it_writes(
    tmp_path: Path, port: int
) -> None:
    """With no audit file to collide on (a database device), both servers ran on one store
    and one audit chain; with a file device the second refused only after its dev set-up."""
    data = tmp_path / "data"
    env = {"MEDSECRETS_AUDIT_DATABASE": "true"}
    with ServerProcess(data, log_dir=tmp_path / "l", env=env) as server:
        token_file = data / "dev-root-token"
        before = token_file.stat()
        done = run_server(
            ["--dev", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}"],
            env=env,
            cwd=tmp_path,
        )
        assert done.code == 2
        assert _refusal(done.stderr) == (
            f"medsecrets server: config error: setting 'data_dir': {str(data)!r} is written "
            "by another process (another server on this data directory?)"
        )
        assert "provisioned" not in done.stderr  # refused before the dev set-up
        assert token_file.stat().st_mtime_ns == before.st_mtime_ns
        assert stat.S_IMODE((data / "server.lock").stat().st_mode) == 0o600
        assert httpx.get(f"{server.addr}/v1/sys/health").status_code == 200
        server.stop()
        server.start()  # the lock went with the first process
        assert httpx.get(f"{server.addr}/v1/sys/health").status_code == 200


def test_a_world_writable_data_dir_is_refused(tmp_path: Path, port: int) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    done = run_server(["--dev", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}"])
    assert done.code == 2
    assert _refusal(done.stderr) == (
        f"medsecrets server: config error: setting 'data_dir': {str(data)!r} is writable by "
        "every user (mode 0777); chmod 700 it"
    )
    assert os.listdir(data) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory away")
def test_a_data_dir_of_another_user_is_refused(tmp_path: Path, port: int) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    os.chown(data, _NOBODY, _NOBODY)
    done = run_server(["--dev", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}"])
    assert done.code == 2
    assert _refusal(done.stderr) == (
        f"medsecrets server: config error: setting 'data_dir': {str(data)!r} belongs to "
        f"another user (uid {_NOBODY}); it must be this server's own"
    )
    assert os.listdir(data) == []


_READ_ONLY = Path("/sys/kernel")  # sysfs: no file can be made there, not even by root


@pytest.mark.skipif(not _READ_ONLY.is_dir(), reason="needs sysfs")
def test_a_data_dir_the_server_cannot_write_names_the_setting(tmp_path: Path, port: int) -> None:
    """It was 'storage_error: cannot open sqlite file: Permission denied' (exit 1)."""
    done = run_server(
        ["--dev", "--data-dir", str(_READ_ONLY), "--listen", f"127.0.0.1:{port}"], cwd=tmp_path
    )
    assert done.code == 2
    assert _refusal(done.stderr).startswith(
        "medsecrets server: config error: setting 'data_dir': "
        f"cannot write in {str(_READ_ONLY)!r} ("
    )


def test_a_data_dir_that_is_a_file_or_a_dangling_link_says_so(tmp_path: Path, port: int) -> None:
    """Both said "cannot create '…' (File exists)"."""
    file = tmp_path / "file"
    file.write_text("")
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "missing")
    for path, what in ((file, "not a directory"), (dangling, "a symbolic link to nothing")):
        done = run_server(["--dev", "--data-dir", str(path), "--listen", f"127.0.0.1:{port}"])
        assert done.code == 2
        assert _refusal(done.stderr) == (
            f"medsecrets server: config error: setting 'data_dir': {str(path)!r} is {what}"
        )
    assert not (tmp_path / "missing").exists()


def test_a_data_dir_that_is_a_link_to_a_private_directory_is_used(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with ServerProcess(link, log_dir=tmp_path / "l") as server:
        assert httpx.get(f"{server.addr}/v1/sys/health").status_code == 200
        assert (real / "server.lock").is_file()
        assert (real / "medsecrets.db").is_file()
