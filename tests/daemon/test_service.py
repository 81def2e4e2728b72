"""`keel service install`: the systemd unit and the launchd agent carry the environment they
were installed from (PATH, KEEL_HOME, KEEL_DB), escape what systemd or XML would otherwise
read differently, and do not restart while another daemon holds the home.

systemd itself judges the unit: `systemd-analyze verify`, and a private systemd user manager
(in a mount namespace of its own, so this machine's /run is untouched) that starts it. Each
skips, saying why, where this machine cannot run it; the unit's text is asserted regardless.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import tomli_w

from keel.daemon.lock import AlreadyRunning, read_holder
from keel.daemon.service import (
    LAUNCHD_ENTRY,
    install_service,
    launchd_plist,
    systemd_unit,
    uninstall_service,
)
from keel.govern.home import init

# A home with everything systemd would otherwise read differently: specifiers (%h),
# variables ($HOME), quotes, a backslash, spaces and a tab.
ODD_HOME = 'keel 100% "it\'s" $HOME \\ %h\tend'
# Interpreter directories: one systemd runs directly, one it refuses as a program's path
# (quotes), which the unit starts through env(1).
ODD_BINS = ["py 50% $PATH", "py 50% $PATH 'q' \"d\""]


@pytest.fixture(autouse=True)
def sqlite_homes(monkeypatch):
    """Homes here keep their ledger in their own SQLite file."""
    monkeypatch.delenv("KEEL_DB", raising=False)


def test_exit_status_for_a_held_home_is_ex_tempfail():
    assert AlreadyRunning.exit_code == 75


def test_systemd_unit_is_exact(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/opt/py 3.11/bin/python")
    home = Path('/home/ana/keel 100% "it\'s" $HOME \\ %h')
    environ = {
        "PATH": "/home/ana/my bin:/usr/bin:/bin",
        "KEEL_DB": "postgresql://keel@db/keel?options=-csearch_path%3Dk",
        "EDITOR": "vi",  # not the service's business
    }
    assert systemd_unit(home, environ) == (
        r"""[Unit]
Description=keel: the ledger, bus and scheduler for your agents
After=network.target

[Service]
Type=simple
Environment="KEEL_HOME=/home/ana/keel 100%% \"it's\" $HOME \\ %%h"
Environment="PATH=/home/ana/my bin:/usr/bin:/bin"
Environment="KEEL_DB=postgresql://keel@db/keel?options=-csearch_path%%3Dk"
ExecStart="/opt/py 3.11/bin/python" -m keel up
Restart=on-failure
RestartSec=5
# 75: another daemon holds this home (keel up in a terminal); a restart would fail again.
RestartPreventExitStatus=75
KillSignal=SIGTERM
TimeoutStopSec=30

[Install]
WantedBy=default.target
"""
    )
    # systemd expands no variables in the program's path, so `$` stays single there.
    monkeypatch.setattr(sys, "executable", "/opt/$py%/python")
    assert 'ExecStart="/opt/$py%%/python" -m keel up\n' in systemd_unit(home, {})
    # A path systemd refuses as a program is an argument of env(1), where `$` is doubled.
    monkeypatch.setattr(sys, "executable", "/home/o'brien/$py%/python")
    assert 'ExecStart=/usr/bin/env "/home/o\'brien/$$py%%/python" -m keel up\n' in (
        systemd_unit(home, {})
    )
    assert "PATH" not in systemd_unit(home, {})


def test_launchd_plist_is_exact_and_escaped(monkeypatch):
    monkeypatch.setattr(sys, "executable", "/opt/py & <co>/bin/python")
    home = Path('/Users/ana/keel & <notes> 100% "it\'s"')
    text = launchd_plist(home, {"PATH": "/opt/homebrew/bin:/usr/bin", "EDITOR": "vi"})
    assert '<string>/Users/ana/keel &amp; &lt;notes&gt; 100% "it\'s"</string>' in text
    assert plistlib.loads(text.encode()) == {
        "Label": "dev.keel.daemon",
        "ProgramArguments": ["/opt/py & <co>/bin/python", "-c", LAUNCHD_ENTRY],
        "EnvironmentVariables": {
            "KEEL_HOME": '/Users/ana/keel & <notes> 100% "it\'s"',
            "PATH": "/opt/homebrew/bin:/usr/bin",
        },
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "StandardOutPath": '/Users/ana/keel & <notes> 100% "it\'s"/daemon.log',
        "StandardErrorPath": '/Users/ana/keel & <notes> 100% "it\'s"/daemon.log',
    }


@pytest.mark.skipif(sys.platform == "darwin", reason="writes the systemd unit (Linux)")
def test_install_writes_a_private_unit_from_this_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    path_var = f"/opt/tools:{os.environ['PATH']}"
    monkeypatch.setenv("PATH", path_var)
    monkeypatch.setenv("KEEL_DB", "postgresql://keel:secret@db/keel")
    unit = tmp_path / "user" / ".config" / "systemd" / "user" / "keel.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("an older unit")
    unit.chmod(0o644)
    home = tmp_path / "home"
    path, hint = install_service(home)
    assert path == unit and "systemctl --user" in hint
    assert unit.read_text() == systemd_unit(home, os.environ)
    assert f"Environment=PATH={path_var}\n" in unit.read_text()
    assert "Environment=KEEL_DB=postgresql://keel:secret@db/keel\n" in unit.read_text()
    # KEEL_DB may hold a password: the unit is the owner's alone.
    assert stat.S_IMODE(unit.stat().st_mode) == 0o600
    # What a caller passes is what the unit keeps.
    install_service(home, {"PATH": "/usr/bin"})
    assert "KEEL_DB" not in unit.read_text()
    assert uninstall_service() == unit and not unit.exists()


def odd_python(tmp_path: Path, name: str) -> Path:
    """This interpreter, reached through a directory whose name needs escaping."""
    directory = tmp_path / name
    directory.mkdir()
    python = directory / "python"
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    python.chmod(0o755)
    return python


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
@pytest.mark.parametrize("bin_name", ODD_BINS)
def test_systemd_analyze_verifies_the_unit_for_an_odd_home(tmp_path, monkeypatch, bin_name):
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setattr(sys, "executable", str(odd_python(tmp_path, bin_name)))
    unit, _ = install_service(tmp_path / ODD_HOME, {"PATH": f"{tmp_path / bin_name}:/usr/bin"})
    # verify also checks that ExecStart's program exists and is executable, so it proves
    # a quoted program path is read back exactly; it reports some problems on stderr only,
    # not in its exit status.
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# -- a real systemd user manager -----------------------------------------------------------


@pytest.fixture
def systemd_user(tmp_path, monkeypatch):
    """`systemctl --user` against a private systemd user manager, whose units live under a
    HOME of this test's own; a skip, saying why, where none can run."""
    systemd = shutil.which("systemd", path="/usr/lib/systemd:/lib/systemd")
    if not (sys.platform == "linux" and systemd and shutil.which("systemctl")):
        pytest.skip("needs Linux with systemd and systemctl")
    if not shutil.which("unshare"):
        pytest.skip("needs unshare (util-linux) to give the manager its own /run")
    user_home, runtime = tmp_path / "user", tmp_path / "runtime"
    user_home.mkdir()
    runtime.mkdir(mode=0o700)
    # systemd runs as a user manager only where /run/systemd/system exists (a machine
    # booted with systemd); a private mount namespace gives it one.
    script = (
        "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && "
        f"exec {shlex.quote(systemd)} --user"
    )
    manager = subprocess.Popen(
        ["unshare", "--mount", "sh", "-c", script],
        env={"HOME": str(user_home), "XDG_RUNTIME_DIR": str(runtime), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (runtime / "systemd" / "private").exists():
        if manager.poll() is not None:
            out = manager.stdout.read().strip() or f"exit status {manager.returncode}"
            pytest.skip(f"cannot run a private systemd user manager here: {out}")
        if time.monotonic() > deadline:
            manager.kill()
            manager.wait()
            pytest.skip("a private systemd user manager did not start within 30 s")
        time.sleep(0.1)
    monkeypatch.setenv("HOME", str(user_home))

    def systemctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["systemctl", "--user", "--no-pager", *args],
            env={"XDG_RUNTIME_DIR": str(runtime), "PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
            timeout=60,
        )

    yield systemctl
    systemctl("stop", "keel.service")
    manager.terminate()  # a user manager stops its units and exits on SIGTERM
    try:
        manager.wait(30)
    except subprocess.TimeoutExpired:
        manager.kill()
        manager.wait()


def unit_state(systemctl) -> dict[str, str]:
    props = "ActiveState,SubState,Result,ExecMainStatus,NRestarts"
    out = systemctl("show", "keel.service", "-p", props).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_for(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


def listening(home: Path):
    return lambda: (holder := read_holder(home)) and holder.get("port") and holder


def home_on_a_free_port(path: Path) -> Path:
    """A new home whose daemon's API takes a free port, not 7717, which another may hold."""
    home, _ = init(path)
    config = tomllib.loads(home.config_path.read_text())
    home.config_path.write_text(tomli_w.dumps({**config, "port": 0}))
    return path


def proc_environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {os.fsdecode(k): os.fsdecode(v) for k, v in pairs}


def terminal_daemon(home: Path) -> subprocess.Popen:
    """`keel up` as a person starts it in a terminal."""
    return subprocess.Popen(
        [sys.executable, "-m", "keel", "up", "--port", "0"],
        env=os.environ | {"KEEL_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=60)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0]


@pytest.mark.parametrize("bin_name", ODD_BINS)
def test_systemd_starts_keel_up_with_the_exact_home_and_path(
    systemd_user, tmp_path, monkeypatch, bin_name
):
    monkeypatch.setattr(sys, "executable", str(odd_python(tmp_path, bin_name)))
    home = home_on_a_free_port(tmp_path / ODD_HOME)
    # Not the manager's own PATH, so the daemon's PATH can only have come from the unit.
    path = f"{tmp_path / bin_name}:/usr/bin:/bin"
    install_service(home, {"PATH": path})
    assert systemd_user("daemon-reload").returncode == 0
    started = systemd_user("start", "keel.service")
    assert started.returncode == 0, started.stderr
    try:
        holder = wait_for(listening(home), f"keel up under systemd ({unit_state(systemd_user)})")
        environ = proc_environ(holder["pid"])
        assert environ["KEEL_HOME"] == str(home)
        assert environ["PATH"] == path
        assert "KEEL_DB" not in environ
        cmdline = Path(f"/proc/{holder['pid']}/cmdline").read_bytes().split(b"\0")
        assert cmdline[-4:] == [b"-m", b"keel", b"up", b""]
        assert (home / "keel.db").exists()
    finally:
        systemd_user("stop", "keel.service")
    wait_for(lambda: read_holder(home) is None, "a clean stop")
    assert unit_state(systemd_user)["Result"] == "success"


def test_systemd_does_not_restart_while_a_terminal_daemon_holds_the_home(systemd_user, tmp_path):
    home = home_on_a_free_port(tmp_path / "home")
    terminal = terminal_daemon(home)
    try:
        holder = wait_for(listening(home), "keel up in the terminal")
        install_service(home, {"PATH": os.environ["PATH"]})
        assert systemd_user("daemon-reload").returncode == 0
        assert systemd_user("start", "keel.service").returncode == 0
        wait_for(
            lambda: unit_state(systemd_user).get("ExecMainStatus") == "75",
            "the unit's exit with 75",
        )
        # Failed and left alone: a unit about to restart is activating/auto-restart.
        expected = {
            "ActiveState": "failed",
            "SubState": "failed",
            "Result": "exit-code",
            "ExecMainStatus": "75",
            "NRestarts": "0",
        }
        assert unit_state(systemd_user) == expected
        time.sleep(6)  # longer than RestartSec
        assert unit_state(systemd_user) == expected
        assert read_holder(home)["pid"] == holder["pid"] == terminal.pid
    finally:
        out = stop(terminal)
    assert terminal.returncode == 0, out


# -- the launchd agent, run as launchd would run it ----------------------------------------


def test_launchd_agent_runs_keel_up_and_exits_cleanly_when_the_home_is_held(tmp_path):
    home = home_on_a_free_port(tmp_path / "home")
    agent = plistlib.loads(launchd_plist(home, {"PATH": os.environ["PATH"]}).encode())
    argv, env = agent["ProgramArguments"], agent["EnvironmentVariables"]

    # Alone it is `keel up`, in the very process launchd started, so launchd's SIGTERM
    # reaches it and it stops cleanly.
    alone = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        holder = wait_for(listening(home), "keel up under the agent")
        assert holder["pid"] == alone.pid
    finally:
        out = stop(alone)
    assert alone.returncode == 0 and "keel is up" in out

    # While a terminal daemon holds the home it exits 0 — which KeepAlive with
    # SuccessfulExit=false does not restart — and says why.
    terminal = terminal_daemon(home)
    try:
        wait_for(listening(home), "keel up in the terminal")
        held = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        assert held.returncode == 0
        assert f"keel is already running for {home} (pid {terminal.pid}" in held.stderr
        assert "Traceback" not in held.stderr
        # Any other failure still exits non-zero, so launchd restarts it.
        broken = subprocess.run(
            argv, env=env | {"KEEL_CLOCK": "soon"}, capture_output=True, text=True, timeout=120
        )
        assert broken.returncode != 0
    finally:
        stop(terminal)
