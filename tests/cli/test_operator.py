"""``medsecrets operator ...`` end to end: a shamir server from init to rekey, and a dev server."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from .conftest import CLI, _base_env

pytestmark = pytest.mark.slow

SHARE_LINE = re.compile(r"^Unseal share (\d+): (.+)$", re.M)


def test_init_unseal_seal_rekey_on_a_shamir_server(shamir_server, cli, canary):
    addr = {"MEDSECRETS_ADDR": shamir_server.addr}
    status = cli("operator", "status", "-o", "json", env=addr).ok().json()
    assert status["initialized"] is False

    # a secret route on an uninitialised server: 5
    cli("secrets", "list", env={**addr, "MEDSECRETS_TOKEN": "ms.x"}).error(5)

    init = cli("operator", "init", "--shares", "3", "--threshold", "2", env=addr).ok()
    shares = [s for _, s in SHARE_LINE.findall(init.stdout)]
    assert len(shares) == 3 and "ONCE" in init.stderr
    root = re.search(r"^Root token: (\S+)$", init.stdout, re.M)
    assert root is not None
    env = {**addr, "MEDSECRETS_TOKEN": root.group(1)}
    cli("operator", "init", env=addr).error(6)  # already initialised

    # init leaves the store unsealed; seal it and unseal with shares
    assert cli("operator", "seal", env=env).ok().stdout.strip() == "Sealed."
    cli("secrets", "list", env=env).error(5)
    first = cli("operator", "unseal", "-", input=shares[0] + "\n", env=addr).ok()
    assert first.stdout.strip() == "Unseal progress: 1 of 2" and first.stderr == ""
    cli("operator", "unseal", "--reset", env=addr).ok()
    again = cli("operator", "unseal", input=shares[0] + "\n", env=addr).ok()  # piped: stdin
    assert again.stdout.strip() == "Unseal progress: 1 of 2"
    bad = cli("operator", "unseal", "-", input="not a share at all\n", env=addr)
    assert bad.code == 2 and "not a share" not in bad.stderr
    done = cli("operator", "unseal", shares[2], env=addr).ok()  # argument: warned
    assert done.stdout.strip() == "Unsealed." and "visible to other users" in done.stderr
    assert shares[2] not in done.stderr

    path = "medessence/prod/external-services"
    cli("secrets", "put", path, "-", input=f'{{"smtp_password": "{canary}"}}', env=env).ok()

    # rekey: the threshold of current shares on stdin, new shares printed once
    rekey = cli(
        "operator",
        "rekey",
        "--new-shares",
        "2",
        "--new-threshold",
        "2",
        input=f"{shares[0]}\n{shares[1]}\n",
        env=env,
    ).ok()
    new_shares = [s for _, s in SHARE_LINE.findall(rekey.stdout)]
    assert len(new_shares) == 2 and not set(new_shares) & set(shares)
    assert "Root token" not in rekey.stdout
    assert "Verified: the new shares now unseal the server" in rekey.stderr

    cli("operator", "seal", env=env).ok()
    old = cli("operator", "unseal", "-", input=shares[0] + "\n", env=addr)
    assert old.code == 2
    for i, share in enumerate(new_shares, start=1):
        out = cli("operator", "unseal", "-", input=share + "\n", env=addr).ok().stdout
        assert out.strip() == ("Unsealed." if i == 2 else "Unseal progress: 1 of 2")
    got = cli("secrets", "get", path, "-f", "smtp_password", env=env).ok()
    assert got.stdout.strip() == canary

    # shares that could not be printed are never verified: the current ones keep working
    lost = _rekey_printing_to_dev_full(env, new_shares)
    assert lost.returncode == 1, lost.stderr
    lines = [line for line in lost.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in lost.stderr
    assert "not verified: the old shares still work" in lines[0]
    cli("operator", "seal", env=env).ok()
    for share in new_shares:
        cli("operator", "unseal", "-", input=share + "\n", env=addr).ok()
    assert cli("secrets", "get", path, "-f", "smtp_password", env=env).ok().stdout.strip() == canary


def _rekey_printing_to_dev_full(
    env: dict[str, str], current: list[str]
) -> subprocess.CompletedProcess[str]:
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    with open("/dev/full", "w") as full:
        return subprocess.run(
            [*CLI, "operator", "rekey", "--new-shares", "2", "--new-threshold", "2"],
            input="".join(share + "\n" for share in current),
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env={**_base_env(), **env},
            timeout=60,
            check=False,
        )


def test_status_rotate_keys_rewrap_and_seal(fresh_dev_server, cli):
    env = {"MEDSECRETS_ADDR": fresh_dev_server.addr, "MEDSECRETS_TOKEN": fresh_dev_server.token}
    table = cli("operator", "status", env=env).ok().stdout
    assert "keyfile" in table and "rekey_pending" in table
    term = cli("operator", "status", "-o", "json", env=env).ok().json()["term"]
    rotated = cli("operator", "rotate", "-o", "json", env=env).ok().json()
    assert rotated["term"] == term + 1
    assert "term" in cli("operator", "rotate", env=env).ok().stdout

    out = cli("operator", "rotate-key", "database", env=env).ok().stdout
    assert "KEK version 2" in out
    versions = cli("operator", "key-versions", "database", "-o", "json", env=env).ok().json()
    assert [v["version"] for v in versions["versions"]] == [1, 2]
    assert "database" in cli("operator", "key-versions", "database", env=env).ok().stdout
    cli("operator", "rotate-key", "nope", env=env).error(3)

    report = cli("operator", "rewrap", "--limit", "2", "-o", "json", env=env).ok().json()
    assert report["secrets"] >= 5 and report["rewrapped"] >= 1 and report["requests"] >= 3
    again = cli("operator", "rewrap", env=env).ok().stdout
    assert "0 data key(s)" in again

    # sudo is needed: a narrow token is denied (4)
    narrow = (
        cli("token", "create", "-p", "*", "-c", "read", "-o", "json", env=env).ok().json()["token"]
    )
    cli("operator", "seal", env={**env, "MEDSECRETS_TOKEN": narrow}).error(4)

    cli("operator", "seal", env=env).ok()
    line = cli("secrets", "get", "medessence/development/database", env=env).error(5)
    assert "sealed" in line
    assert cli("operator", "status", "-o", "json", env=env).ok().json()["sealed"] is True


def test_init_refuses_a_relative_key_file_before_asking_the_server(cli):
    """The key file is on the server: a path relative to the CLI's directory means nothing
    there. A usage error naming --key-file; the server (none listens here) is not asked."""
    for path in ("unseal.key", "./keys/unseal.key"):
        line = cli(
            "operator", "init", "--key-file", path, env={"MEDSECRETS_ADDR": "http://127.0.0.1:9"}
        ).error(2)
        assert "--key-file" in line and "absolute" in line


AUTO_SEAL = (
    "error: the server uses an automatic seal (keyfile), which takes no shares: it unseals "
    "itself when it starts, so restart the server to unseal it"
)


def test_unseal_of_a_key_file_server_after_an_operator_seal_says_to_restart_it(
    fresh_dev_server, cli
):
    """A key-file seal takes no shares, and after ``operator seal`` the server refuses to
    auto-unseal until it restarts: ``operator unseal`` says so in one line (exit 2),
    with or without a share, and ``--reset`` too; it used to ask for a share and then
    say "no share given", or answer "the keyfile seal takes no shares: auto-unseal"."""
    env = {"MEDSECRETS_ADDR": fresh_dev_server.addr, "MEDSECRETS_TOKEN": fresh_dev_server.token}
    cli("operator", "seal", env=env).ok()
    for args, given in ((), ""), (("-",), "any share\n"), (("--reset",), ""):
        assert cli("operator", "unseal", *args, input=given, env=env).error(2) == AUTO_SEAL
    assert cli("operator", "status", "-o", "json", env=env).ok().json()["sealed"] is True
    fresh_dev_server.stop()
    fresh_dev_server.start()
    assert cli("operator", "status", "-o", "json", env=env).ok().json()["sealed"] is False
    unsealed = cli("operator", "unseal", env=env).ok()
    assert unsealed.stdout == "Already unsealed: the keyfile seal takes no shares.\n"


def test_unseal_of_an_unsealed_shamir_server_refuses_garbage_and_says_already_unsealed(
    shamir_server, cli
):
    """A share given to an unsealed server used to be ignored with "Unsealed." and exit 0:
    garbage is a usage error (checked before the share is sent, whatever the seal
    state); a well-formed share is not used, and the answer says so."""
    addr = {"MEDSECRETS_ADDR": shamir_server.addr}
    init = cli("operator", "init", "--shares", "3", "--threshold", "2", env=addr).ok()
    shares = [s for _, s in SHARE_LINE.findall(init.stdout)]
    assert cli("operator", "status", "-o", "json", env=addr).ok().json()["sealed"] is False

    garbage = cli("operator", "unseal", "-", input="garbage words here\n", env=addr)
    line = garbage.error(2)
    assert line.startswith("error: malformed share") and "garbage" not in garbage.stderr
    words = shares[0].split()
    words[0] = "acid" if words[0] == "academic" else "academic"  # the checksum fails
    typo = " ".join(words)
    assert cli("operator", "unseal", "-", input=typo + "\n", env=addr).error(2) == line

    well_formed = cli("operator", "unseal", "-", input=shares[0] + "\n", env=addr).ok()
    assert well_formed.stdout == "Already unsealed: the share was not used.\n"
    as_json = cli("operator", "unseal", "-", "-o", "json", input=shares[1] + "\n", env=addr)
    assert as_json.ok().json()["sealed"] is False
