"""Asking the daemon that runs for a home to do something only it can do well: fire a job
(runs execute in one place, the daemon) or report its live state (uptime, bus lag).

The daemon is found through its lock file (`keel.daemon.lock`), and called over its HTTP
API on loopback with the home's operator token. No daemon, no answer (None): the caller
then does the work itself.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import TYPE_CHECKING, Any

from ..daemon.lock import read_holder
from ..errors import ERRORS, Forbidden, KeelError
from ..govern.home import Home

if TYPE_CHECKING:
    import urllib.error

#: Where the daemon's API serves the operations a client process hands over to it.
ROUTES = {
    "cadence.run": ("POST", "/api/v1/cadence/jobs/{name}/run"),
    "status.show": ("GET", "/api/v1/status"),
}


def ask(
    home: Home, operation: str, arguments: dict[str, Any] | None = None, identity: str = ""
) -> Any | None:
    """The daemon's JSON answer to `operation`, asked as `identity` (the caller: the daemon's
    door judges it again, and what it writes is signed as it), or None when no daemon runs
    for `home`. An error the daemon reports is raised here as the same kind of KeelError."""
    holder = read_holder(home.path)
    if not holder or not holder.get("port"):
        return None
    import urllib.error  # HTTP is loaded only when a daemon is there to be asked
    import urllib.request

    method, path = ROUTES[operation]
    args = dict(arguments or {})
    path = path.format(**{k: urllib.parse.quote(str(args.pop(k)), safe="") for k in _names(path)})
    body = None
    if method == "GET":
        if args:
            path += "?" + urllib.parse.urlencode(args)
    else:
        body = json.dumps(args).encode()
    address = holder.get("address") or "127.0.0.1"
    host = f"[{address}]" if ":" in address else address
    token = home.client_token(identity or home.identity)
    request = urllib.request.Request(
        f"http://{host}:{holder['port']}{path}",
        data=body,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    # As long as the daemon may take: a run it is asked to wait for, else a moment.
    timeout = float(args.get("wait") or 0) + 30
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise _error(exc) from None
    except (urllib.error.URLError, OSError):
        return None  # it stopped meanwhile: do the work here


def _names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def _error(exc: urllib.error.HTTPError) -> KeelError:
    try:
        data = json.loads(exc.read())
    except (ValueError, OSError):
        data = {}
    message = data.get("error") or f"the daemon answered {exc.code}"
    if data.get("kind") == Forbidden.kind:
        return Forbidden(message, data.get("capability", ""), data.get("operation", ""))
    by_kind = {cls.kind: cls for cls in ERRORS if cls is not Forbidden}
    return by_kind.get(data.get("kind"), KeelError)(message)
