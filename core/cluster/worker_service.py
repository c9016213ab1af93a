"""`tpi-chat worker --install-service`: make this device serve after a reboot, no login needed.

The service runs the same `tpi-chat worker` command line the user would type, with the
data dir made absolute so it keeps this device's identity, pairings and shards, and with
its console output appended to DATA_DIR/logs/worker.log.

- Linux: a systemd unit. As root (sudo): /etc/systemd/system/tpi-chat-worker.service,
  run as the invoking user; as a normal user: a user unit, which starts at boot only
  with `loginctl enable-linger USER`.
- macOS: a launchd plist (LaunchDaemon as root, LaunchAgent otherwise).
- Windows: a Task Scheduler task run as SYSTEM at start-up.

The file texts and command lines are built by pure functions; the installers take a
`root` prefix (like DESTDIR) and a `run` callable, so tests write into a temporary folder
and record the commands instead of changing the machine. Nothing here uses a shell.
"""

from __future__ import annotations

import argparse
import getpass
import os
import plistlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.cluster.identity import DATA_ENV_VAR, default_data_dir
from core.cluster.worker_protocol import parse_size
from core.errors import TpiError

UNIT_NAME = "tpi-chat-worker.service"
LAUNCHD_LABEL = "org.tpichat.worker"
TASK_NAME = "TPI Chat worker"
WINDOWS_SCRIPT = "worker-service.cmd"
LINGER_DIR = Path("/var/lib/systemd/linger")  # one file per user with lingering on

Runner = Callable[[Sequence[str]], subprocess.CompletedProcess]


def run_command(cmd: Sequence[str]) -> subprocess.CompletedProcess:
    """The real runner: no shell, output captured so a failure can be quoted to the user."""
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, check=False,
                              timeout=120)
    except FileNotFoundError:
        raise TpiError(f"cannot run '{cmd[0]}': it is not installed on this system") from None
    except subprocess.TimeoutExpired:
        raise TpiError(f"'{' '.join(cmd)}' did not finish within 2 minutes") from None


def _check(run: Runner, cmd: Sequence[str]) -> subprocess.CompletedProcess:
    result = run(cmd)
    if result.returncode != 0:
        why = (result.stderr or result.stdout or "").strip() or f"exit {result.returncode}"
        raise TpiError(f"'{' '.join(cmd)}' failed: {why}")
    return result


@dataclass(frozen=True)
class Account:
    """Who the service runs as, and whether it is installed system-wide (by root)."""

    system: bool
    user: str
    home: Path


@dataclass(frozen=True)
class WorkerService:
    """What the service runs: the full command line, and where it keeps state and logs."""

    argv: tuple[str, ...]
    data_dir: Path
    working_dir: Path | None  # the source checkout, so `-m core.cli` imports; None if frozen

    @property
    def log_path(self) -> Path:
        return self.data_dir / "logs" / "worker.log"


def current_account() -> Account:
    """Root installs system-wide for the user who ran sudo (root without sudo: root);
    anyone else installs for themselves."""
    if getattr(os, "geteuid", lambda: -1)() == 0:
        user = os.environ.get("SUDO_USER") or "root"
        return Account(system=True, user=user, home=Path(os.path.expanduser(f"~{user}")))
    return Account(system=False, user=getpass.getuser(), home=Path.home())


def app_command() -> list[str]:
    """Like rank_host.rank_command: the frozen app re-runs itself, else `python -m core.cli`.
    sys.executable is kept as is (not resolved) so a venv's python still finds the venv."""
    if getattr(sys, "frozen", False):
        return [os.path.abspath(sys.executable)]
    return [os.path.abspath(sys.executable), "-m", "core.cli"]


def source_root() -> Path | None:
    """The folder that holds the `core` package, when running from source."""
    if getattr(sys, "frozen", False):
        return None
    return Path(__file__).resolve().parents[2]


def service_data_dir(data_dir: str | None, account: Account) -> Path:
    """The worker's data dir as an absolute path. Under sudo without --data-dir, it is the
    invoking user's default (the one their own `tpi-chat worker` uses), not root's."""
    if data_dir:
        return Path(data_dir).expanduser().resolve()
    default = default_data_dir().expanduser().resolve()
    if account.system and not os.environ.get(DATA_ENV_VAR):
        try:
            return account.home / default.relative_to(Path.home().resolve())
        except ValueError:  # e.g. an XDG_DATA_HOME outside root's home: keep it
            pass
    return default


def service_from_args(args: argparse.Namespace, account: Account) -> WorkerService:
    """The service for `tpi-chat worker` with these options. --port is passed only when
    given: without it the worker reuses the ports it saved in its data dir."""
    quota = getattr(args, "shard_quota", None)
    for size in (args.memory_budget, quota):
        try:  # refuse a bad size now, not in a log after the next reboot
            if size:
                parse_size(size)
        except ValueError as e:
            raise TpiError(str(e)) from None
    data_dir = service_data_dir(args.data_dir, account)
    argv = [*app_command(), "worker", "--data-dir", str(data_dir)]
    for flag, value in (("--name", args.name), ("--host", args.host),
                        ("--port", args.port or None), ("--memory-budget", args.memory_budget),
                        ("--shard-quota", quota)):
        if value is not None:
            argv += [flag, str(value)]
    return WorkerService(tuple(argv), data_dir, source_root())


def prepare_log(service: WorkerService, owner: str | None = None) -> None:
    """Create the log (and data dir) ahead of time so the user can find it at once; when
    root installs for another user (`owner`), hand over what it created so the worker
    can write there."""
    logs = service.log_path.parent
    created = [p for p in (service.data_dir, logs) if not p.exists()]
    logs.mkdir(parents=True, exist_ok=True)
    if not service.log_path.exists():
        created.append(service.log_path)
        service.log_path.touch()
    if owner:
        for path in created:
            shutil.chown(path, user=owner)


def _under(root: Path, path: Path) -> Path:
    """`path` inside the prefix `root` (root=/ is the real system)."""
    return root / path.relative_to(path.anchor)


# --- Linux: systemd -----------------------------------------------------------------

def systemd_escape(text: str) -> str:
    """Keep systemd from expanding specifiers (%) in any setting."""
    return text.replace("%", "%%")


def systemd_quote(arg: str) -> str:
    """One ExecStart argument: % and $ doubled (specifiers, variable expansion), and
    double-quoted with \\ and \" escaped when it has spaces, quotes or backslashes."""
    if "\n" in arg or "\r" in arg:
        raise TpiError(f"cannot put a line break in a service command line: {arg!r}")
    text = systemd_escape(arg).replace("$", "$$")
    if text and not any(c in text for c in " \t\"'\\;"):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unit_path(account: Account, root: Path = Path("/"),
                      unit_name: str = UNIT_NAME) -> Path:
    if account.system:
        return _under(root, Path("/etc/systemd/system") / unit_name)
    return _under(root, account.home / ".config/systemd/user" / unit_name)


def systemd_unit(service: WorkerService, account: Account) -> str:
    """The unit text. A user unit has no network-online.target to order after (the user
    manager cannot see system targets); Restart= covers a network that comes up late."""
    log = systemd_escape(str(service.log_path))
    unit = ["[Unit]", "Description=TPI Chat worker (lends this device to TPI Chat masters)"]
    if account.system:
        unit += ["After=network-online.target", "Wants=network-online.target"]
    unit += ["", "[Service]", "Type=simple"]
    if account.system:
        unit.append(f"User={account.user}")
    if service.working_dir is not None:
        unit.append(f"WorkingDirectory={systemd_escape(str(service.working_dir))}")
    unit += [
        "Environment=PYTHONUNBUFFERED=1",  # log lines appear as they happen
        "ExecStart=" + " ".join(systemd_quote(a) for a in service.argv),
        f"StandardOutput=append:{log}",
        f"StandardError=append:{log}",
        "Restart=on-failure",
        # 5 s between tries keeps it under the start limit (5 starts in 10 s), so a
        # worker whose --host address is not up yet retries instead of giving up.
        "RestartSec=5",
        "",
        "[Install]",
        f"WantedBy={'multi-user.target' if account.system else 'default.target'}",
    ]
    return "\n".join(unit) + "\n"


def _systemctl(account: Account, *words: str) -> list[str]:
    return ["systemctl", *([] if account.system else ["--user"]), *words]


def install_systemd(service: WorkerService, account: Account, run: Runner = run_command,
                    root: Path = Path("/"), unit_name: str = UNIT_NAME) -> Path:
    """Write (or rewrite) the unit, then enable and start it; a rewrite restarts it so
    the new options apply."""
    path = systemd_unit_path(account, root, unit_name)
    existed = path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(systemd_unit(service, account))
    _check(run, _systemctl(account, "daemon-reload"))
    _check(run, _systemctl(account, "enable", "--now", unit_name))
    if existed:
        _check(run, _systemctl(account, "restart", unit_name))
    return path


def uninstall_systemd(account: Account, run: Runner = run_command, root: Path = Path("/"),
                      unit_name: str = UNIT_NAME) -> Path | None:
    """Stop, disable and remove the unit; None when there was none."""
    path = systemd_unit_path(account, root, unit_name)
    if not path.exists():
        return None
    _check(run, _systemctl(account, "disable", "--now", unit_name))
    path.unlink()
    _check(run, _systemctl(account, "daemon-reload"))
    return path


def linger_hint(account: Account, root: Path = Path("/")) -> str | None:
    """A user unit starts at boot only if the user lingers; say how, unless it does."""
    if account.system or _under(root, LINGER_DIR / account.user).exists():
        return None
    return (f"to start it at boot without logging in, run once: "
            f"sudo loginctl enable-linger {account.user}")


# --- macOS: launchd (written but untested: no Mac in CI) --------------------------

def launchd_plist_path(account: Account, root: Path = Path("/")) -> Path:
    """A LaunchDaemon (root) starts at boot; a LaunchAgent only when the user logs in."""
    if account.system:
        return _under(root, Path("/Library/LaunchDaemons") / f"{LAUNCHD_LABEL}.plist")
    return _under(root, account.home / "Library/LaunchAgents" / f"{LAUNCHD_LABEL}.plist")


def launchd_plist(service: WorkerService, account: Account) -> bytes:
    job: dict[str, object] = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(service.argv),
        "RunAtLoad": True,
        "KeepAlive": True,
        "StandardOutPath": str(service.log_path),
        "StandardErrorPath": str(service.log_path),
        "EnvironmentVariables": {"PYTHONUNBUFFERED": "1"},
    }
    if service.working_dir is not None:
        job["WorkingDirectory"] = str(service.working_dir)
    if account.system:
        job["UserName"] = account.user
    return plistlib.dumps(job)


def install_launchd(service: WorkerService, account: Account, run: Runner = run_command,
                    root: Path = Path("/")) -> Path:
    path = launchd_plist_path(account, root)
    if path.exists():  # `launchctl load` refuses a job that is already loaded
        run(["launchctl", "unload", "-w", str(path)])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(launchd_plist(service, account))
    _check(run, ["launchctl", "load", "-w", str(path)])
    return path


def uninstall_launchd(account: Account, run: Runner = run_command,
                      root: Path = Path("/")) -> Path | None:
    path = launchd_plist_path(account, root)
    if not path.exists():
        return None
    _check(run, ["launchctl", "unload", "-w", str(path)])
    path.unlink()
    return path


# --- Windows: Task Scheduler (written but untested: no Windows in CI) -----------------

def _cmd_quote(arg: str) -> str:
    """cmd.exe batch quoting: always quoted (so & | < > ^ are literal), % doubled."""
    if '"' in arg:
        raise TpiError(f"cannot put a double quote in a service command line: {arg!r}")
    return '"' + arg.replace("%", "%%") + '"'


def windows_script(service: WorkerService) -> str:
    """The batch file the task runs. A file rather than all in /TR, because /TR holds at
    most 261 characters and has no working-directory option."""
    lines = ["@echo off", "rem Written by `tpi-chat worker --install-service`."]
    if service.working_dir is not None:
        lines.append(f"cd /d {_cmd_quote(str(service.working_dir))}")
    lines += ["set PYTHONUNBUFFERED=1",
              " ".join(_cmd_quote(a) for a in service.argv)
              + f" >> {_cmd_quote(str(service.log_path))} 2>&1"]
    return "\r\n".join(lines) + "\r\n"


def windows_script_path(service: WorkerService) -> Path:
    return service.data_dir / WINDOWS_SCRIPT


def schtasks_create(script: Path) -> list[str]:
    """Run at boot as SYSTEM; /F replaces an existing task. NB: schtasks gives the task
    the default 72-hour run limit; a worker up longer than that is stopped by Windows."""
    return ["schtasks", "/Create", "/TN", TASK_NAME, "/SC", "ONSTART", "/RU", "SYSTEM",
            "/TR", f'cmd /c "{script}"', "/F"]


def schtasks_delete() -> list[str]:
    return ["schtasks", "/Delete", "/TN", TASK_NAME, "/F"]


def install_schtasks(service: WorkerService, run: Runner = run_command) -> Path:
    script = windows_script_path(service)
    script.write_text(windows_script(service), newline="")
    _check(run, schtasks_create(script))
    return script


def uninstall_schtasks(service: WorkerService, run: Runner = run_command) -> str | None:
    """Delete the task; None when there was none."""
    if run(["schtasks", "/Query", "/TN", TASK_NAME]).returncode != 0:
        return None
    _check(run, schtasks_delete())
    windows_script_path(service).unlink(missing_ok=True)
    return f"task '{TASK_NAME}'"


# --- entry points from core/worker.py ----------------------------------------------

def _say(text: str) -> None:
    print(text, flush=True)


def install_service(args: argparse.Namespace, platform: str = sys.platform,
                    run: Runner = run_command, root: Path = Path("/")) -> int:
    """`tpi-chat worker --install-service`: install, start, and say where the log is."""
    account = current_account()
    service = service_from_args(args, account)
    # Root installing for the sudo user: what root creates must become theirs.
    prepare_log(service, account.user if account.system and account.user != "root" else None)
    if platform.startswith("linux"):
        where = install_systemd(service, account, run, root)
        hint = linger_hint(account, root)
    elif platform == "darwin":
        where = install_launchd(service, account, run, root)
        hint = None if account.system else (
            "it starts when you log in; install with sudo to start it at boot")
    elif platform == "win32":
        where, hint = install_schtasks(service, run), None
    else:
        raise TpiError(f"--install-service does not support this system ({platform})")
    _say(f"worker service installed: {where}")
    _say(f"it runs: {' '.join(service.argv)}")
    _say(f"log: {service.log_path}")
    if hint:
        _say(hint)
    _say("undo with: tpi-chat worker --uninstall-service")
    return 0


def uninstall_service(args: argparse.Namespace, platform: str = sys.platform,
                      run: Runner = run_command, root: Path = Path("/")) -> int:
    """`tpi-chat worker --uninstall-service`: stop and remove it; fine if there is none."""
    account = current_account()
    if platform.startswith("linux"):
        removed: Path | str | None = uninstall_systemd(account, run, root)
    elif platform == "darwin":
        removed = uninstall_launchd(account, run, root)
    elif platform == "win32":
        removed = uninstall_schtasks(service_from_args(args, account), run)
    else:
        raise TpiError(f"--uninstall-service does not support this system ({platform})")
    _say("no worker service is installed; nothing to remove" if removed is None
         else f"worker service removed: {removed}")
    return 0
