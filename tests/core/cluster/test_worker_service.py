"""`tpi-chat worker --install-service`: the unit / plist / task it writes, and the commands.

Most tests write into tmp_path (the installers' `root` prefix) and record commands with a
fake runner; one installs a real user unit when this machine runs systemd, and one has
systemd-analyze check the generated unit's syntax when that tool is here.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from core.cli import build_parser
from core.cluster import worker_service as ws
from core.cluster.identity import default_data_dir
from core.errors import TpiError

REPO = Path(__file__).resolve().parents[3]
ALICE = ws.Account(system=True, user="alice", home=Path("/home/alice"))
BOB = ws.Account(system=False, user="bob", home=Path("/home/bob"))


class Recorder:
    """A `run` that records each command and answers with a chosen exit code."""

    def __init__(self, codes: dict[str, int] | None = None, stderr: str = ""):
        self.calls: list[list[str]] = []
        self.codes = codes or {}
        self.stderr = stderr

    def __call__(self, cmd):
        self.calls.append(list(cmd))
        code = next((c for word, c in self.codes.items() if word in cmd), 0)
        return subprocess.CompletedProcess(list(cmd), code, "", self.stderr if code else "")


def worker_args(*argv: str):
    return build_parser().parse_args(["worker", *argv])


def settings(unit: str) -> dict[str, list[str]]:
    """`Key=value` lines of a unit file, by key (a key may repeat)."""
    out: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def exec_start(unit: str) -> list[str]:
    """ExecStart split the way systemd does for arguments without % or $."""
    return shlex.split(settings(unit)["ExecStart"][0])


# --- the command line --------------------------------------------------------------

def test_command_passes_the_options_through_with_an_absolute_data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    svc = ws.service_from_args(worker_args("--data-dir", "rel", "--memory-budget", "3GB",
                                           "--name", "pi-1", "--host", "10.0.0.7",
                                           "--port", "5600", "--shard-quota", "40GB"), BOB)
    assert svc.data_dir == tmp_path / "rel"
    assert list(svc.argv) == [os.path.abspath(sys.executable), "-m", "core.cli", "worker",
                              "--data-dir", str(tmp_path / "rel"), "--name", "pi-1",
                              "--host", "10.0.0.7", "--port", "5600",
                              "--memory-budget", "3GB", "--shard-quota", "40GB"]
    assert svc.log_path == tmp_path / "rel" / "logs" / "worker.log"
    assert svc.working_dir == REPO and (REPO / "core" / "cli.py").is_file()


def test_options_not_given_are_left_to_the_worker(tmp_path):
    """No --port: the worker reuses the ports it saved, so a master finds it again."""
    svc = ws.service_from_args(worker_args("--data-dir", str(tmp_path)), BOB)
    assert svc.argv[3:] == ("worker", "--data-dir", str(tmp_path))


def test_frozen_app_runs_itself_without_python_m(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    svc = ws.service_from_args(worker_args("--data-dir", str(tmp_path)), BOB)
    assert svc.argv[:2] == (os.path.abspath(sys.executable), "worker")
    assert svc.working_dir is None
    assert "WorkingDirectory" not in settings(ws.systemd_unit(svc, BOB))


def test_a_bad_memory_budget_is_refused_at_install_time(tmp_path):
    with pytest.raises(TpiError, match="3 gigs"):
        ws.service_from_args(worker_args("--data-dir", str(tmp_path),
                                         "--memory-budget", "3 gigs"), BOB)
    with pytest.raises(TpiError, match="lots"):
        ws.service_from_args(worker_args("--data-dir", str(tmp_path),
                                         "--shard-quota", "lots"), BOB)


def test_under_sudo_the_default_data_dir_is_the_invoking_users(tmp_path, monkeypatch):
    """Root's own data dir would be a different identity, unreadable by User=alice."""
    monkeypatch.delenv("TPI_CHAT_DATA", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "root-home"))
    mine = default_data_dir().resolve().relative_to((tmp_path / "root-home").resolve())
    assert ws.service_data_dir(None, ALICE) == Path("/home/alice") / mine
    monkeypatch.setenv("TPI_CHAT_DATA", str(tmp_path / "chosen"))
    assert ws.service_data_dir(None, ALICE) == tmp_path / "chosen"


# --- systemd -----------------------------------------------------------------------

def test_system_unit_runs_as_the_sudo_user_after_the_network(tmp_path):
    svc = ws.service_from_args(worker_args("--data-dir", str(tmp_path / "d"),
                                           "--memory-budget", "2GB"), ALICE)
    unit = ws.systemd_unit(svc, ALICE)
    s = settings(unit)
    log = str(tmp_path / "d" / "logs" / "worker.log")
    assert s["User"] == ["alice"]
    assert s["After"] == s["Wants"] == ["network-online.target"]
    assert s["WantedBy"] == ["multi-user.target"]
    assert s["StandardOutput"] == s["StandardError"] == [f"append:{log}"]
    assert s["Restart"] == ["on-failure"]
    assert s["Environment"] == ["PYTHONUNBUFFERED=1"]
    assert s["WorkingDirectory"] == [str(REPO)]
    assert exec_start(unit) == list(svc.argv)
    assert exec_start(unit)[-2:] == ["--memory-budget", "2GB"]
    assert ws.systemd_unit_path(ALICE) == Path("/etc/systemd/system/tpi-chat-worker.service")


def test_user_unit_has_no_user_and_starts_with_the_user_manager(tmp_path):
    svc = ws.service_from_args(worker_args("--data-dir", str(tmp_path)), BOB)
    s = settings(ws.systemd_unit(svc, BOB))
    assert "User" not in s and "After" not in s  # the user manager has no network target
    assert s["WantedBy"] == ["default.target"]
    assert ws.systemd_unit_path(BOB, tmp_path) == (
        tmp_path / "home/bob/.config/systemd/user/tpi-chat-worker.service")


def test_a_data_dir_with_spaces_quotes_and_backslashes_survives_quoting(tmp_path):
    data = tmp_path / 'my "tpi" data\\x'
    svc = ws.service_from_args(worker_args("--data-dir", str(data), "--name", "kitchen pc"),
                               BOB)
    line = settings(ws.systemd_unit(svc, BOB))["ExecStart"][0]
    assert f'"{data}"'.replace("\\", "\\\\").replace('"tpi"', '\\"tpi\\"') in line
    assert '"kitchen pc"' in line
    assert shlex.split(line) == list(svc.argv)


def test_percent_and_dollar_are_not_expanded_by_systemd():
    assert ws.systemd_quote("/srv/100%/$HOME") == "/srv/100%%/$$HOME"
    assert ws.systemd_quote("a b%") == '"a b%%"'
    assert ws.systemd_quote("") == '""'
    with pytest.raises(TpiError):
        ws.systemd_quote("two\nlines")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_accepts_the_unit(tmp_path):
    """systemd's own parser: rejects unbalanced quotes, relative log paths, bad keys."""
    root = ws.Account(system=True, user="root", home=Path("/root"))
    svc = ws.service_from_args(worker_args("--data-dir", str(tmp_path / 'a "b" c'),
                                           "--memory-budget", "1GB"), root)
    unit = tmp_path / "tpi-chat-worker.service"
    unit.write_text(ws.systemd_unit(svc, root))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "tpi-chat-worker.service" not in r.stderr, r.stderr  # no warnings about it


def test_install_then_uninstall_a_user_unit(tmp_path):
    svc = ws.service_from_args(worker_args("--data-dir", str(tmp_path / "d")), BOB)
    run = Recorder()
    path = ws.install_systemd(svc, BOB, run, root=tmp_path)
    assert path == tmp_path / "home/bob/.config/systemd/user/tpi-chat-worker.service"
    assert path.read_text() == ws.systemd_unit(svc, BOB)
    assert run.calls == [["systemctl", "--user", "daemon-reload"],
                         ["systemctl", "--user", "enable", "--now", ws.UNIT_NAME]]

    run.calls.clear()  # installing again rewrites it and restarts with the new options
    ws.install_systemd(svc, BOB, run, root=tmp_path)
    assert run.calls[-1] == ["systemctl", "--user", "restart", ws.UNIT_NAME]

    run.calls.clear()
    assert ws.uninstall_systemd(BOB, run, root=tmp_path) == path
    assert not path.exists()
    assert run.calls == [["systemctl", "--user", "disable", "--now", ws.UNIT_NAME],
                         ["systemctl", "--user", "daemon-reload"]]

    run.calls.clear()  # nothing left: says so, touches nothing
    assert ws.uninstall_systemd(BOB, run, root=tmp_path) is None
    assert run.calls == []


def test_install_a_system_unit_as_root(tmp_path):
    svc = ws.service_from_args(worker_args("--data-dir", str(tmp_path / "d")), ALICE)
    run = Recorder()
    path = ws.install_systemd(svc, ALICE, run, root=tmp_path)
    assert path == tmp_path / "etc/systemd/system/tpi-chat-worker.service"
    assert "User=alice\n" in path.read_text()
    assert run.calls == [["systemctl", "daemon-reload"],
                         ["systemctl", "enable", "--now", ws.UNIT_NAME]]


def test_a_failing_systemctl_is_a_clear_error(tmp_path):
    svc = ws.service_from_args(worker_args("--data-dir", str(tmp_path / "d")), BOB)
    run = Recorder(codes={"enable": 1}, stderr="Failed to connect to bus: No medium found\n")
    with pytest.raises(TpiError) as e:
        ws.install_systemd(svc, BOB, run, root=tmp_path)
    assert str(e.value) == ("'systemctl --user enable --now tpi-chat-worker.service' failed: "
                            "Failed to connect to bus: No medium found")


def test_linger_hint_only_when_needed(tmp_path):
    assert "loginctl enable-linger bob" in ws.linger_hint(BOB, tmp_path)
    assert ws.linger_hint(ALICE, tmp_path) is None
    (tmp_path / "var/lib/systemd/linger").mkdir(parents=True)
    (tmp_path / "var/lib/systemd/linger/bob").touch()
    assert ws.linger_hint(BOB, tmp_path) is None


def test_install_service_prints_the_log_and_the_way_back(tmp_path, monkeypatch, capsys):
    bob = ws.Account(system=False, user="bob", home=tmp_path / "home")
    monkeypatch.setattr(ws, "current_account", lambda: bob)
    run = Recorder()
    args = worker_args("--data-dir", str(tmp_path / "d"), "--install-service")
    assert ws.install_service(args, "linux", run, root=tmp_path) == 0
    out = capsys.readouterr().out
    log = tmp_path / "d" / "logs" / "worker.log"
    assert log.is_file()  # there before the service writes, so the user can tail it
    assert f"log: {log}" in out
    assert "sudo loginctl enable-linger bob" in out
    assert "tpi-chat worker --uninstall-service" in out

    assert ws.uninstall_service(args, "linux", run, root=tmp_path) == 0
    assert ws.uninstall_service(args, "linux", run, root=tmp_path) == 0
    out = capsys.readouterr().out
    assert "worker service removed:" in out
    assert "nothing to remove" in out


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root")
def test_root_hands_what_it_creates_to_the_user(tmp_path):
    import pwd

    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' here")
    tmp_path.chmod(0o755)
    svc = ws.WorkerService(("x",), tmp_path / "d", None)
    ws.prepare_log(svc, "nobody")
    for p in (svc.data_dir, svc.log_path.parent, svc.log_path):
        assert p.stat().st_uid == nobody.pw_uid, p


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="systemd path")
def test_cli_worker_uninstall_service_dispatches(tmp_path, monkeypatch, capsys):
    from core.cli import main

    monkeypatch.setattr(ws, "current_account",
                        lambda: ws.Account(system=False, user="bob", home=tmp_path))
    assert main(["worker", "--uninstall-service"]) == 0
    assert "nothing to remove" in capsys.readouterr().out


def test_worker_help_lists_both_flags():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-m", "core.cli", "worker", "--help"], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "--install-service" in r.stdout and "--uninstall-service" in r.stdout


def _user_systemd_reason() -> str | None:
    """Why a real `systemctl --user` cannot be used here, or None when it can."""
    if not sys.platform.startswith("linux") or shutil.which("systemctl") is None:
        return "no systemctl on this system"
    pid1 = subprocess.run(["ps", "-p", "1", "-o", "comm="], capture_output=True, text=True)
    if pid1.stdout.strip() != "systemd":
        return f"systemd is not PID 1 here (PID 1 is '{pid1.stdout.strip()}')"
    state = subprocess.run(["systemctl", "--user", "is-system-running"],
                           capture_output=True, text=True)
    if state.stdout.strip() not in ("running", "degraded"):
        return f"no user systemd manager ({(state.stderr or state.stdout).strip()})"
    return None


def test_real_user_unit_serves_and_goes_away(tmp_path):
    """A real install: the user manager only reads units from the real
    ~/.config/systemd/user, so the unit goes there under a name of its own; the
    worker's whole state (its 'home') is in tmp_path."""
    reason = _user_systemd_reason()
    if reason:
        pytest.skip(reason)
    import getpass

    me = ws.Account(system=False, user=getpass.getuser(), home=Path.home())
    name = f"tpi-chat-worker-test-{os.getpid()}.service"
    svc = ws.service_from_args(worker_args("--data-dir", str(tmp_path / "home"),
                                           "--host", "127.0.0.1"), me)
    ws.prepare_log(svc)
    try:
        path = ws.install_systemd(svc, me, root=Path("/"), unit_name=name)
        deadline = time.monotonic() + 60
        while "pairing code" not in svc.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "pairing code" in svc.log_path.read_text()
        active = subprocess.run(["systemctl", "--user", "is-active", name],
                                capture_output=True, text=True)
        assert active.stdout.strip() == "active"
    finally:
        ws.uninstall_systemd(me, root=Path("/"), unit_name=name)
    assert not path.exists()
    gone = subprocess.run(["systemctl", "--user", "is-enabled", name],
                          capture_output=True, text=True)
    assert gone.returncode != 0


# --- launchd (macOS) ---------------------------------------------------------------

def test_launchd_plist_is_valid_and_complete(tmp_path):
    svc = ws.service_from_args(worker_args("--data-dir", str(tmp_path / "d d"),
                                           "--memory-budget", "3GB"), BOB)
    raw = ws.launchd_plist(svc, BOB)
    assert ET.fromstring(raw).tag == "plist"
    job = plistlib.loads(raw)
    assert job["Label"] == "org.tpichat.worker"
    assert job["ProgramArguments"] == list(svc.argv)
    assert job["RunAtLoad"] is True and job["KeepAlive"] is True
    assert job["StandardOutPath"] == job["StandardErrorPath"] == str(svc.log_path)
    assert job["WorkingDirectory"] == str(REPO)
    assert "UserName" not in job
    assert plistlib.loads(ws.launchd_plist(svc, ALICE))["UserName"] == "alice"
    assert ws.launchd_plist_path(BOB) == Path(
        "/home/bob/Library/LaunchAgents/org.tpichat.worker.plist")
    assert ws.launchd_plist_path(ALICE) == Path(
        "/Library/LaunchDaemons/org.tpichat.worker.plist")


def test_launchd_install_and_uninstall(tmp_path):
    svc = ws.service_from_args(worker_args("--data-dir", str(tmp_path / "d")), BOB)
    run = Recorder()
    path = ws.install_launchd(svc, BOB, run, root=tmp_path)
    assert plistlib.loads(path.read_bytes())["ProgramArguments"] == list(svc.argv)
    assert run.calls == [["launchctl", "load", "-w", str(path)]]
    run.calls.clear()
    ws.install_launchd(svc, BOB, run, root=tmp_path)  # loaded already: unload first
    assert run.calls == [["launchctl", "unload", "-w", str(path)],
                         ["launchctl", "load", "-w", str(path)]]
    run.calls.clear()
    assert ws.uninstall_launchd(BOB, run, root=tmp_path) == path
    assert not path.exists() and run.calls == [["launchctl", "unload", "-w", str(path)]]
    assert ws.uninstall_launchd(BOB, run, root=tmp_path) is None


# --- Task Scheduler (Windows) --------------------------------------------------------

def test_schtasks_command_line(tmp_path):
    script = Path("C:/Users/Ann Lee/tpi-chat/worker-service.cmd")
    assert ws.schtasks_create(script) == [
        "schtasks", "/Create", "/TN", "TPI Chat worker", "/SC", "ONSTART", "/RU", "SYSTEM",
        "/TR", f'cmd /c "{script}"', "/F"]
    assert ws.schtasks_delete() == ["schtasks", "/Delete", "/TN", "TPI Chat worker", "/F"]


def test_windows_script_redirects_to_the_log(tmp_path):
    svc = ws.service_from_args(worker_args("--data-dir", str(tmp_path / "50% d"),
                                           "--name", "a&b"), BOB)
    text = ws.windows_script(svc)
    assert text.endswith("\r\n") and "\n" not in text.replace("\r\n", "")
    lines = text.split("\r\n")
    assert lines[2] == f'cd /d "{REPO}"'
    run_line = lines[4]
    assert run_line.startswith(f'"{os.path.abspath(sys.executable)}" "-m" "core.cli" "worker"')
    assert f'"{tmp_path}/50%% d"' in run_line and '"a&b"' in run_line
    assert run_line.endswith(f' >> "{tmp_path}/50%% d/logs/worker.log" 2>&1')


def test_schtasks_install_and_uninstall(tmp_path):
    svc = ws.service_from_args(worker_args("--data-dir", str(tmp_path)), BOB)
    run = Recorder()
    script = ws.install_schtasks(svc, run)
    assert script == tmp_path / "worker-service.cmd"
    assert script.read_bytes() == ws.windows_script(svc).encode()
    assert run.calls == [ws.schtasks_create(script)]
    run.calls.clear()
    assert ws.uninstall_schtasks(svc, run) == "task 'TPI Chat worker'"
    assert run.calls[-1] == ws.schtasks_delete() and not script.exists()
    assert ws.uninstall_schtasks(svc, Recorder(codes={"/Query": 1})) is None
