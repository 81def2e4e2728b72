"""One daemon per KEEL_HOME: an exclusive lock on `daemon.lock`, and who holds it.

The kernel releases the lock when the holder dies (even by kill -9), so a stale file
never blocks a restart.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from ..ledger.errors import KeelError


class AlreadyRunning(KeelError):
    """Another daemon holds this home.

    Its own exit status, 75 (EX_TEMPFAIL from sysexits.h: try again later), lets a service
    manager tell it from a crash: the systemd unit does not restart on it, and the launchd
    agent treats it as a clean exit, so neither loops while a terminal daemon runs.
    """

    exit_code = 75
    status = 409
    kind = "already-running"


class DaemonLock:
    def __init__(self, home: Path):
        self.path = home / "daemon.lock"
        self._fd: int | None = None

    def acquire(self, info: dict) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(self.path.parent) or {}
            raise AlreadyRunning(
                f"keel is already running for {self.path.parent} (pid {holder.get('pid', '?')}"
                f" on {holder.get('host', '?')}, port {holder.get('port', '?')})"
            ) from None
        self._fd = fd
        self.update(info)

    def update(self, info: dict) -> None:
        assert self._fd is not None
        data = json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), **info}
        ).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def read_holder(home: Path) -> dict | None:
    """Who holds the daemon lock, or None when no daemon runs."""
    path = home / "daemon.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raw = os.pread(fd, 4096, 0)
            try:
                return json.loads(raw or b"{}")
            except json.JSONDecodeError:
                return {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
