"""KEEL_HOME: the operator's config, keys and (by default) the SQLite ledger.

`init` is idempotent: it creates what is missing and never replaces a key or a ledger.
"""

from __future__ import annotations

import os
import re
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tomli_w
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..ledger import BadInput, KeelError, Ledger, NotFound, Signer

OPERATOR = "operator"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
DEFAULT_CONFIG = {"operator": OPERATOR, "timezone": "UTC", "db": "", "port": 7717}


def home_dir() -> Path:
    return Path(os.environ.get("KEEL_HOME") or "~/.keel").expanduser()


@dataclass
class Home:
    path: Path

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    @property
    def keys(self) -> Path:
        return self.path / "keys"

    def config(self) -> dict:
        try:
            return {**DEFAULT_CONFIG, **tomllib.loads(self.config_path.read_text())}
        except FileNotFoundError:
            raise NotFound(f"{self.path} is not a keel home yet (run 'keel init')") from None
        except tomllib.TOMLDecodeError as exc:
            raise BadInput(f"{self.config_path} is not valid TOML: {exc}") from None

    @property
    def operator(self) -> str:
        return str(self.config()["operator"])

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
        if name == self.operator:
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
        if secrets.compare_digest(token.encode(), self.token().encode()):
            return self.operator
        name = token.partition("~")[0]
        path = self.path / "tokens" / name
        if not (_NAME.match(name) and path.is_file()):
            return None
        stored = path.read_text().strip().encode()
        return name if secrets.compare_digest(token.encode(), stored) else None

    def port(self) -> int:
        port = self.config().get("port", 7717)
        if not isinstance(port, int) or not 0 <= port < 65536:
            raise BadInput(f"config port must be a number from 0 to 65535, got {port!r}")
        return port

    def key_path(self, name: str) -> Path:
        return self.keys / f"{name}.key"

    def signer(self, name: str | None = None) -> Signer:
        name = name or self.operator
        path = self.key_path(name)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError:
            raise NotFound(f"no key for identity {name!r} (see 'keel identity add')") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeelError(f"{path} is not an Ed25519 key")
        return Signer(name, key)

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
        signer = self.signer(as_name) if as_name or self.key_path(self.operator).exists() else None
        return Ledger.open(self.db_target(), signer=signer, default_tz=self.timezone(), **kw)


def prepare_home(home: Home) -> bool:
    """Create the home's folders, config and API token (not its key or ledger)."""
    created = False
    for sub in ("", "blobs", "keys", "canon"):
        d = home.path / sub
        if not d.exists():
            d.mkdir(parents=True)
            created = True
    os.chmod(home.keys, 0o700)
    if not home.config_path.exists():
        home.config_path.write_text(tomli_w.dumps(DEFAULT_CONFIG))
        created = True
    if not home.token_path.exists():
        fd = os.open(home.token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
        created = True
    return created


def init(path: Path | None = None) -> tuple[Home, bool]:
    """Create the home, its config, the operator's key and the ledger's genesis.

    Returns the home and whether anything was created.
    """
    home = Home(path or home_dir())
    created = prepare_home(home)
    operator = home.operator
    if not home.key_path(operator).exists():
        created = True
    signer = home.new_key(operator)
    with home.ledger() as ledger:
        if ledger.register_identity(operator, signer.public_key, "operator", signer) is not None:
            created = True
    return home, created


def add_identity(home: Home, name: str, role: str = "agent") -> Signer:
    """A key for an agent or connector, registered in the ledger by the operator."""
    if role not in ("agent", "connector", "operator"):
        raise BadInput(f"role must be agent, connector or operator, got {role!r}")
    signer = home.new_key(name)
    with home.ledger() as ledger:
        ledger.register_identity(name, signer.public_key, role)
    return signer
