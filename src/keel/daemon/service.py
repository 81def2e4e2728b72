"""Start keel at login: a systemd user unit on Linux, a launchd agent on macOS.

A service runs `keel up` away from the terminal it was installed from, so the unit carries
what that terminal gave keel: PATH (a job's command is found under the service as it is
under `keel up` in the terminal), KEEL_HOME, and KEEL_DB when set (else the service would
open a different ledger). Both files are written readable by their owner only, since
KEEL_DB may hold a password.

When another daemon already holds the home, `keel up` exits 75 (`AlreadyRunning`). systemd
is told not to restart on that status. launchd cannot filter exit statuses — KeepAlive with
SuccessfulExit=false restarts on every non-zero one — so the agent runs `keel up` through
`launchd_up`, which makes that status a clean exit.
"""

from __future__ import annotations

import os
import re
import runpy
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from .lock import AlreadyRunning

LABEL = "dev.keel.daemon"
#: Variables of the installing environment that the service keeps (KEEL_HOME is always set).
CAPTURED = ("PATH", "KEEL_DB")
#: What the launchd agent runs: `keel up`, in this process, through `launchd_up`.
LAUNCHD_ENTRY = "from keel.daemon.service import launchd_up; launchd_up()"

# Words made of these characters mean the same to systemd unquoted; any other is quoted.
_SYSTEMD_PLAIN = re.compile(r"[A-Za-z0-9_@+=:,./-]+")
# What systemd refuses in the path of the program ExecStart= runs, however it is quoted
# ("Executable name contains special characters"); in an argument it is fine.
_SYSTEMD_BAD_PROGRAM = re.compile(r"[\"'\\\x00-\x1f\x7f]")


def _unit_path() -> Path:
    if sys.platform == "darwin":
        return Path.home() / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    return Path.home() / ".config" / "systemd" / "user" / "keel.service"


def service_environment(home: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment the service gives `keel up`: KEEL_HOME, and the captured variables
    that `environ` sets."""
    return {"KEEL_HOME": str(home)} | {n: environ[n] for n in CAPTURED if environ.get(n)}


def _systemd_word(word: str, *, argument: bool = False) -> str:
    """`word` written so that systemd reads it back unchanged (systemd.syntax(7)).

    In double quotes a backslash, a quote and a control character are C-escaped, and `%`
    becomes `%%`, since systemd expands specifiers (`%h`) in ExecStart= and Environment=.
    In an `argument` of ExecStart=, `$` becomes `$$`, since systemd expands variables
    there; it expands none in the program's path or in Environment=.
    """
    if _SYSTEMD_PLAIN.fullmatch(word):
        return word
    out = []
    for char in word:
        if char in '\\"':
            out.append("\\" + char)
        elif char == "%":
            out.append("%%")
        elif char == "$" and argument:
            out.append("$$")
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _exec_start(python: str) -> str:
    """`python -m keel up` for ExecStart=; an interpreter whose path systemd refuses as a
    program is started through env(1), which takes it as an ordinary argument and execs it
    in place, so systemd still watches keel's own process."""
    program, arguments = python, ["-m", "keel", "up"]
    if _SYSTEMD_BAD_PROGRAM.search(python):
        program, arguments = "/usr/bin/env", [python, *arguments]
    return " ".join([_systemd_word(program), *(_systemd_word(a, argument=True) for a in arguments)])


def systemd_unit(home: Path, environ: Mapping[str, str]) -> str:
    environment = "".join(
        f"Environment={_systemd_word(f'{name}={value}')}\n"
        for name, value in service_environment(home, environ).items()
    )
    return f"""[Unit]
Description=keel: the ledger, bus and scheduler for your agents
After=network.target

[Service]
Type=simple
{environment}ExecStart={_exec_start(sys.executable)}
Restart=on-failure
RestartSec=5
# 75: another daemon holds this home (keel up in a terminal); a restart would fail again.
RestartPreventExitStatus={AlreadyRunning.exit_code}
KillSignal=SIGTERM
TimeoutStopSec=30

[Install]
WantedBy=default.target
"""


def launchd_plist(home: Path, environ: Mapping[str, str]) -> str:
    log = str(home / "daemon.log")
    agent = {
        "Label": LABEL,
        "ProgramArguments": [sys.executable, "-c", LAUNCHD_ENTRY],
        "EnvironmentVariables": service_environment(home, environ),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "StandardOutPath": log,
        "StandardErrorPath": log,
    }
    import plistlib  # macOS only: not loaded by every command

    return plistlib.dumps(agent, sort_keys=False).decode()


def launchd_up() -> None:
    """Run `keel up` for the launchd agent, exiting 0 where it would exit 75.

    launchd would otherwise restart the agent every ten seconds for as long as a terminal
    daemon holds the home; a crash or any other failure still exits non-zero and is
    restarted. `keel up` runs in this very process, not as a child, so the SIGTERM launchd
    sends on unload reaches it and it stops cleanly.
    """
    sys.argv = ["keel", "up"]
    try:
        runpy.run_module("keel", run_name="__main__")
    except SystemExit as ended:
        if ended.code == AlreadyRunning.exit_code:
            raise SystemExit(0) from None
        raise


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)  # a file left by an older install may be wider


def install_service(home: Path, environ: Mapping[str, str] | None = None) -> tuple[Path, str]:
    """Write the unit for `home`, keeping what it needs of `environ` (by default this
    process's environment); returns its path and the command that enables it."""
    environ = os.environ if environ is None else environ
    home = home.resolve()
    path = _unit_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if sys.platform == "darwin":
        _write_private(path, launchd_plist(home, environ))
        return path, f"enable it with: launchctl load -w {shlex.quote(str(path))}"
    _write_private(path, systemd_unit(home, environ))
    return (
        path,
        "enable it with: systemctl --user daemon-reload && systemctl --user enable --now keel",
    )


def uninstall_service() -> Path | None:
    path = _unit_path()
    if not path.exists():
        return None
    path.unlink()
    return path
