"""Start keel at login: a systemd user unit on Linux, a launchd agent on macOS."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from xml.sax.saxutils import escape

LABEL = "dev.keel.daemon"


def _unit_path() -> Path:
    if sys.platform == "darwin":
        return Path.home() / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    return Path.home() / ".config" / "systemd" / "user" / "keel.service"


def _systemd_unit(home: Path) -> str:
    command = " ".join(shlex.quote(p) for p in (sys.executable, "-m", "keel", "up"))
    return f"""[Unit]
Description=keel: the ledger, bus and scheduler for your agents
After=network.target

[Service]
Type=simple
Environment=KEEL_HOME={shlex.quote(str(home))}
ExecStart={command}
Restart=on-failure
RestartSec=5
KillSignal=SIGTERM
TimeoutStopSec=30

[Install]
WantedBy=default.target
"""


def _launchd_plist(home: Path) -> str:
    args = "".join(f"<string>{escape(a)}</string>" for a in (sys.executable, "-m", "keel", "up"))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
<key>Label</key><string>{LABEL}</string>
<key>ProgramArguments</key><array>{args}</array>
<key>EnvironmentVariables</key><dict><key>KEEL_HOME</key><string>{escape(str(home))}</string></dict>
<key>RunAtLoad</key><true/>
<key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>
<key>StandardOutPath</key><string>{escape(str(home / "daemon.log"))}</string>
<key>StandardErrorPath</key><string>{escape(str(home / "daemon.log"))}</string>
</dict></plist>
"""


def install_service(home: Path) -> tuple[Path, str]:
    """Write the unit; returns its path and the command that enables it."""
    path = _unit_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if sys.platform == "darwin":
        path.write_text(_launchd_plist(home.resolve()))
        return path, f"enable it with: launchctl load -w {path}"
    path.write_text(_systemd_unit(home.resolve()))
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
