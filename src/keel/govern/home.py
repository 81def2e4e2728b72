"""KEEL_HOME: the operator's config, keys and (by default) the SQLite ledger.

`init` is idempotent: it creates what is missing and never replaces a key or a ledger.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import socket
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tomli_w
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..ledger import BadInput, KeelError, Ledger, NotFound, Signer

OPERATOR = "operator"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_CONFIG = {"operator": OPERATOR, "timezone": "UTC", "db": "", "port": 7717}
#: Where keel records that its ledger failed verification (keel is read-only meanwhile).
INTEGRITY_FILE = "integrity.json"


def home_dir() -> Path:
    return Path(os.environ.get("KEEL_HOME") or "~/.keel").expanduser()


def local_zone() -> str:
    """The system's time zone as an IANA name (TZ, then /etc/localtime, then
    /etc/timezone), or UTC when it cannot be told."""
    candidates = [os.environ.get("TZ", "").removeprefix(":")]
    with contextlib.suppress(OSError):
        candidates.append(os.readlink("/etc/localtime").partition("zoneinfo/")[2])
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text().strip())
    for name in candidates:
        if name and not name.startswith("/"):
            try:
                ZoneInfo(name)
                return name
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return "UTC"


def write_private(path: Path, text: str) -> None:
    """Create `path` readable by its owner only (mode 0600), whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def stat_key(path: Path | str) -> tuple | None:
    """What tells one version of a file from the next without reading it (None: absent)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)


@dataclass
class Home:
    path: Path
    #: Files read on every call (config, the integrity mark), kept until their stat changes.
    _read: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._config_file = str(self.path / "config.toml")
        self._integrity_file = str(self.path / INTEGRITY_FILE)

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    @property
    def keys(self) -> Path:
        return self.path / "keys"

    def embedder(self) -> str | None:
        """The recall embedder this home is configured with (`[recall] embedder`)."""
        return self.config().get("recall", {}).get("embedder")

    def set_config(self, section: str, key: str, value: Any) -> None:
        """Set `[section] key = value` in config.toml, keeping everything else."""
        config = tomllib.loads(self.config_path.read_text())
        config.setdefault(section, {})[key] = value
        write_private(self.config_path, tomli_w.dumps(config))

    def config(self) -> dict:
        key = stat_key(self.config_path)
        cached = self._read.get("config")
        if key is not None and cached is not None and cached[0] == key:
            return dict(cached[1])
        try:
            data = {**DEFAULT_CONFIG, **tomllib.loads(self.config_path.read_text())}
        except FileNotFoundError:
            raise NotFound(f"{self.path} is not a keel home yet (run 'keel init')") from None
        except tomllib.TOMLDecodeError as exc:
            raise BadInput(f"{self.config_path} is not valid TOML: {exc}") from None
        self._read["config"] = (key, data)
        return dict(data)

    @property
    def operator(self) -> str:
        key = stat_key(self._config_file)
        cached = self._read.get("config")
        if key is not None and cached is not None and cached[0] == key:
            return str(cached[1]["operator"])
        return str(self.config()["operator"])

    @property
    def identity(self) -> str:
        """Who this home acts as by default: its operator — or, on a node that joined a
        shared ledger (`keel node join`), the node's own identity: a node never holds a
        copy of the operator's key."""
        return str(self.config().get("identity") or self.operator)

    @property
    def node(self) -> str:
        """This home's name among the nodes sharing one ledger: `node` in config.toml, else
        the host's name and a digest of the home's path (stable across restarts, distinct
        for two homes on one host). Node-local state (the recall index) is kept per node."""
        named = self.config().get("node")
        if named:
            return str(named)
        digest = hashlib.sha256(str(self.path.resolve()).encode()).hexdigest()[:6]
        host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:48] or "host"
        return f"{host}-{digest}"

    def describe_ledger(self) -> str:
        """Where the ledger is, as `keel up` announces it: a shared PostgreSQL ledger loudly
        (host, port, database — never a password — and where the setting came from)."""
        target = self.db_target()
        if isinstance(target, Path):
            return f"{target} (SQLite, this machine only)"
        from psycopg.conninfo import conninfo_to_dict

        try:
            parts = conninfo_to_dict(target)
        except Exception:
            parts = {}
        where = (
            f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}/{parts.get('dbname', '')}"
        )
        source = "KEEL_DB" if os.environ.get("KEEL_DB") else "config.toml"
        return (
            f"SHARED PostgreSQL ledger at {where} (from {source}): every node pointed at it "
            f"writes here; this node is {self.node}"
        )

    def db_target(self) -> str | Path:
        """KEEL_DB (a PostgreSQL DSN) wins over config; else keel.db in the home."""
        dsn = os.environ.get("KEEL_DB") or self.config().get("db")
        return dsn or self.path / "keel.db"

    def timezone(self) -> ZoneInfo:
        name = str(self.config().get("timezone", "UTC"))
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise BadInput(f"config timezone {name!r} is not a known time zone") from None

    @property
    def token_path(self) -> Path:
        return self.path / "token"

    def token(self) -> str:
        """The API token (created by init, mode 0600)."""
        try:
            return self.token_path.read_text().strip()
        except FileNotFoundError:
            raise NotFound(f"no API token in {self.path} (run 'keel init')") from None

    def client_token(self, name: str) -> str:
        """The token a client (an MCP agent, a script) uses to act as identity `name` over
        HTTP; created on first use, mode 0600. The operator's token is `token()`."""
        if name == self.identity:
            return self.token()
        self.signer(name)  # the identity must exist here, or the token would be useless
        tokens = self.path / "tokens"
        tokens.mkdir(mode=0o700, exist_ok=True)
        path = tokens / name
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"{name}~{secrets.token_urlsafe(32)}\n")
        return path.read_text().strip()

    def identity_for(self, token: str) -> str | None:
        """The identity a bearer token belongs to, or None; compared in constant time."""
        if not token:
            return None
        operator = self.token_path
        if operator.is_file() and secrets.compare_digest(
            token.encode(), operator.read_text().strip().encode()
        ):
            return self.identity
        name = token.partition("~")[0]
        path = self.path / "tokens" / name
        if not (_NAME.match(name) and path.is_file()):
            return None
        stored = path.read_text().strip().encode()
        return name if secrets.compare_digest(token.encode(), stored) else None

    def integrity_problem(self) -> str | None:
        """Why the ledger is not to be written, as recorded by the last verification that
        failed (`keel up`, `keel verify`); None when it verified (or was never checked)."""
        key = stat_key(self._integrity_file)
        if key is None:
            return None
        path = self.path / INTEGRITY_FILE
        cached = self._read.get("integrity")
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            data = json.loads(path.read_text())
            problem = str(data.get("problem") or "the ledger failed verification")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, AttributeError):
            problem = "the record of the ledger's last verification is unreadable"
        self._read["integrity"] = (key, problem)
        return problem

    def set_integrity_problem(self, problem: str | None, first_bad: int | None = None) -> None:
        """Record a failed verification (keel turns read-only), or clear it (None)."""
        path = self.path / INTEGRITY_FILE
        if problem is None:
            path.unlink(missing_ok=True)
            return
        write_private(path, json.dumps({"problem": problem, "first_bad": first_bad}) + "\n")

    def secure(self) -> None:
        """The home is the operator's alone: folders 0700, files 0600 (keys, token,
        databases, config). Run at init and whenever a home is opened, so a home made
        by an older keel is tightened too. A home that is already 0700 was made or
        tightened by this keel (which creates everything private), and is not walked
        again; a symbolic link is never followed out of the home."""
        if not self.path.is_dir() or stat.S_IMODE(self.path.stat().st_mode) == 0o700:
            return
        for root, dirs, files in os.walk(self.path):
            for name in dirs + files:
                path = os.path.join(root, name)
                if not os.path.islink(path):
                    os.chmod(path, 0o700 if name in dirs else 0o600)
        os.chmod(self.path, 0o700)  # last: an interrupted pass is taken up again next time

    def port(self) -> int:
        port = self.config().get("port", 7717)
        if not isinstance(port, int) or not 0 <= port < 65536:
            raise BadInput(f"config port must be a number from 0 to 65535, got {port!r}")
        return port

    def key_path(self, name: str) -> Path:
        return self.keys / f"{name}.key"

    def signer(self, name: str | None = None) -> Signer:
        name = name or self.identity
        path = self.key_path(name)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise NotFound(f"no key for identity {name!r} (see 'keel identity add')") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeelError(f"{path} is not an Ed25519 key")
        return Signer(name, key)

    def forget_identity(self, name: str) -> None:
        """Delete `name`'s private key and client token from the home (after revocation:
        nothing here can act as it again)."""
        if not _NAME.match(name) or name in (self.operator, self.identity):
            raise BadInput(f"{name!r} cannot be removed from this home")
        self.key_path(name).unlink(missing_ok=True)
        (self.path / "tokens" / name).unlink(missing_ok=True)

    def new_key(self, name: str) -> Signer:
        """Create a private key file readable by its owner only (mode 0600)."""
        if not _NAME.match(name):
            raise BadInput(f"{name!r} is not a usable identity name (letters, digits, _ . -)")
        self.keys.mkdir(parents=True, exist_ok=True)
        os.chmod(self.keys, 0o700)
        path = self.key_path(name)
        if path.exists():
            return self.signer(name)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return Signer(name, key)

    def ledger(self, as_name: str | None = None, **kw) -> Ledger:
        signer = self.signer(as_name) if as_name or self.key_path(self.identity).exists() else None
        target = self.db_target()
        if isinstance(target, Path) and not target.exists() and target.parent.is_dir():
            # SQLite creates its -wal and -shm files with the database's own mode.
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o600))
        return Ledger.open(target, signer=signer, default_tz=self.timezone(), **kw)


def prepare_home(home: Home) -> bool:
    """Create the home's folders, config and API token (not its key or ledger)."""
    created = False
    for sub in ("", "blobs", "keys", "canon"):
        d = home.path / sub
        if not d.exists():
            d.mkdir(parents=True, mode=0o700)
            created = True
    if not home.config_path.exists():
        # A new home keeps time the way this machine does, and remembers a shared ledger
        # it was made on: started later without KEEL_DB, it must not fall back to a file.
        config = {
            **DEFAULT_CONFIG,
            "timezone": local_zone(),
            "db": os.environ.get("KEEL_DB", ""),
        }
        write_private(home.config_path, tomli_w.dumps(config))
        created = True
    if not home.token_path.exists():
        write_private(home.token_path, secrets.token_urlsafe(32) + "\n")
        created = True
    home.secure()
    return created


def init(path: Path | None = None) -> tuple[Home, bool]:
    """Create the home, its config, the operator's key and the ledger's genesis.

    Returns the home and whether anything was created.
    """
    home = Home(path or home_dir())
    fresh_home = not home.config_path.exists()
    created = prepare_home(home)
    operator = home.operator
    fresh_key = not home.key_path(operator).exists()
    created = created or fresh_key
    signer = home.new_key(operator)
    with home.ledger() as ledger:
        known = {i["name"]: i for i in ledger.identities()} if ledger.head().id else {}
        if operator in known and signer.public_key.hex() not in known[operator]["keys"]:
            # A ledger another home made (a shared one): this machine joins it as a node
            # of its own. Nothing made here is left behind (a key that could never sign,
            # a config that would stand in the join's way).
            if fresh_key:
                home.key_path(operator).unlink(missing_ok=True)
            if fresh_home:
                home.config_path.unlink(missing_ok=True)
                home.token_path.unlink(missing_ok=True)
            raise BadInput(
                "that ledger already belongs to another home; make this machine a node of "
                "it with 'keel node join DSN' (its operator approves it)"
            )
        if ledger.register_identity(operator, signer.public_key, "operator", signer) is not None:
            created = True
    return home, created
