"""`pipeline bench --device ssh://...` against a real OpenSSH server on 127.0.0.1."""
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config.devices import parse_device
from tests.conftest import copy_run

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def test_parse_device():
    assert parse_device("ssh://pi@raspberrypi.local:2222") == ("pi", "raspberrypi.local", 2222)
    assert parse_device("ssh://board") == (None, "board", 22)
    from pipeline.core.errors import UsageError

    with pytest.raises(UsageError, match="ssh://user@host"):
        parse_device("pi@board")


@pytest.mark.parametrize("url, message", [
    ("ssh://-oProxyCommand=touch${IFS}pwned", "is not a host name"),
    ("ssh://-oProxyCommand=x@board", "is not a valid user name"),
    ("ssh://pi@-board", "is not a host name"),
    ("ssh://pi@board;reboot", "is not a host name"),
    ("ssh://pi@board:0", "port 0 is outside"),
])
def test_device_strings_cannot_become_ssh_options(url, message):
    from pipeline.core.errors import UsageError

    with pytest.raises(UsageError, match=message):
        parse_device(url)


@pytest.mark.parametrize("remote_dir", ["/tmp/x;reboot", "~/$(reboot)", "relative/dir", "-rf",
                                        "/tmp/a b", "/tmp/../etc"])
def test_remote_dir_is_a_plain_path(remote_dir):
    from pipeline.config.devices import check_remote_dir
    from pipeline.core.errors import UsageError

    with pytest.raises(UsageError, match="--remote-dir must be"):
        check_remote_dir(remote_dir)
    assert check_remote_dir("~/.edge-runtime/") == "~/.edge-runtime"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not os.path.exists(SSHD):
        pytest.skip("OpenSSH server not installed (CI installs openssh-server)")
    home = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / name)], check=True)
    (home / "authorized_keys").write_text((home / "user_key.pub").read_text())
    os.chmod(home / "authorized_keys", 0o600)
    port = _free_port()
    config = home / "sshd_config"
    config.write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {home / 'host_key'}
AuthorizedKeysFile {home / 'authorized_keys'}
PidFile {home / 'sshd.pid'}
PermitRootLogin prohibit-password
PasswordAuthentication no
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
""")
    Path("/run/sshd").mkdir(exist_ok=True)
    server = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    deadline = time.time() + 10
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    else:
        server.kill()
        pytest.fail(f"sshd did not start: {server.stderr.read().decode()[-500:]}")
    yield {"port": port, "key": home / "user_key", "known_hosts": home / "known_hosts",
           "remote_dir": str(home / "device")}
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(scope="module")
def default_remote_dir():
    """The default ``~/.edge-runtime`` of this user (the loopback device's home), shared by
    this module's tests (the device installs its runtime once): removed afterwards unless it
    was there before."""
    remote = Path.home() / ".edge-runtime"
    existed = remote.exists()
    yield remote
    if not existed:
        shutil.rmtree(remote, ignore_errors=True)


@pytest.mark.slow
def test_remote_bench_over_loopback_ssh(sshd, trained_run, default_remote_dir, tmp_path):
    import getpass

    from pipeline.config.stages import QuantizeOptions
    from pipeline.optimizing.quantize import quantize

    run_dir = copy_run(trained_run.run_dir, tmp_path)
    quantize(run_dir, QuantizeOptions(modes=["int8"]))
    runner = CliRunner()
    args = ["bench", "--run", str(run_dir), "--artifact", "model_int8.tflite",
            "--threads", "1,2", "--runs", "50", "--min-seconds", "0.1",
            "--device", f"ssh://{getpass.getuser()}@127.0.0.1:{sshd['port']}",
            "--ssh-option", f"-i={sshd['key']}", "--ssh-option", "StrictHostKeyChecking=no",
            "--ssh-option", f"UserKnownHostsFile={sshd['known_hosts']}"]  # default --remote-dir
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((run_dir / "bench.json").read_text())
    assert report["device"]["location"].startswith("ssh://")
    assert report["device"]["cpu_count"] == os.cpu_count()
    assert "governor" in report["device"] and "temperature_c" in report["device"]
    rows = report["results"]
    assert [(r["artifact"], r["threads"]) for r in rows] == [("model_int8.tflite", 1), ("model_int8.tflite", 2)]
    assert all(0 < r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] for r in rows)
    # the device got its own venv with the light runtime, and no job files were left behind
    device = default_remote_dir  # "~" was expanded on the device, not taken literally
    assert (device / "venv" / "bin" / "edge-runtime").exists()
    assert not list(device.glob("job.*"))


def test_unreachable_device_is_one_line(trained_run, tmp_path):
    from pipeline.config.stages import QuantizeOptions
    from pipeline.optimizing.quantize import quantize

    run_dir = copy_run(trained_run.run_dir, tmp_path)
    quantize(run_dir, QuantizeOptions(modes=["int8"]))  # an artifact to send
    runner = CliRunner()
    result = runner.invoke(app, ["bench", "--run", str(run_dir), "--device",
                                 f"ssh://nobody@127.0.0.1:{_free_port()}"])
    assert result.exit_code == 9
    assert result.stderr.startswith("error: nobody@127.0.0.1:") and len(result.stderr.splitlines()) == 1
