"""Identity operations: who may sign transactions, and the tokens clients act with."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..errors import Conflict, NotFound
from ..ledger.instants import format_instant
from ..ledger.ledger import identity_entity
from .call import Call
from .models import Input, NoArguments, Output
from .registry import operation

IdentityName = Annotated[
    str,
    Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Letters, digits, _ . -"),
]


class Identity(Output):
    name: str
    role: str | None
    keys: list[str] = Field(description="Its Ed25519 public keys, hex (none: revoked).")
    tier: str | None = Field(None, description="Its governance tier (null: no governance).")
    pins: list[str] = Field(default_factory=list, description="The pins it holds.")
    revoked: bool = False
    last_write: str | None = Field(None, description="When it last signed a transaction.")


@operation("identity.list", capability="identity.read", writes=False)
def identity_list(call: Call, p: NoArguments) -> list[Identity]:
    """Identities registered in the ledger: role, keys, governance tier and pins, and when
    each last signed a transaction."""
    ledger, operator = call.ledger, call.services.home.operator
    policy = call.policy
    out = []
    for found in ledger.identities():
        rules = policy.rules_for(found["name"], operator, found["role"]) if policy else None
        last = ledger.last_tx_of(found["name"])
        out.append(
            Identity(
                **found,
                tier=rules.tier if rules else None,
                pins=rules.pins if rules else [],
                revoked=not found["keys"],
                last_write=format_instant(last.time) if last else None,
            )
        )
    return out


class IdentityAddIn(Input):
    name: IdentityName
    role: Literal["agent", "connector", "operator"] = "agent"


@operation("identity.add", capability="identity.manage", writes=True)
def identity_add(call: Call, p: IdentityAddIn) -> Identity:
    """Make a key for an agent or connector (kept in the home, mode 0600) and register its
    public key in the ledger. Adding an identity again changes nothing; changing its role
    is refused (roles change through governance, not by re-adding)."""
    ledger, home = call.ledger, call.services.home
    role = ledger.view().value(identity_entity(p.name), "keel.identity/role")
    if role is not None and role != p.role:
        raise Conflict(f"{p.name!r} is already registered, as {role}, not {p.role}")
    made = not home.key_path(p.name).exists()
    signer = home.new_key(p.name)
    try:
        ledger.register_identity(p.name, signer.public_key, p.role, signer=call.signer)
    except BaseException:
        if made:  # a key the ledger does not know would only mislead
            home.key_path(p.name).unlink(missing_ok=True)
        raise
    return _one(call, p.name)


def _one(call: Call, name: str) -> Identity:
    for found in identity_list(call, NoArguments()):
        if found.name == name:
            return found
    raise NotFound(f"identity {name!r} is not registered")


class RevokeIn(Input):
    name: IdentityName


@operation("identity.revoke", capability="identity.manage", writes=True)
def identity_revoke(call: Call, p: RevokeIn) -> Identity:
    """Revoke an identity's keys and tokens at once: its later writes and calls are refused;
    what it signed before still verifies. Its private key and token files are deleted."""
    if p.name == call.services.home.operator:
        raise Conflict("the home's operator cannot be revoked (it signs governance)")
    call.ledger.revoke_identity(p.name, signer=call.signer)
    call.services.home.forget_identity(p.name)
    return _one(call, p.name)


class TokenIn(Input):
    name: IdentityName


class Token(Output):
    identity: str
    token: str = Field(description="A bearer token for the HTTP API and /mcp, as this identity.")


@operation("identity.token", capability="identity.manage", writes=False)
def identity_token(call: Call, p: TokenIn) -> Token:
    """The bearer token a client (an MCP agent, a script) uses to act as an identity over
    HTTP; made on first use and kept in the home (mode 0600)."""
    call.services.role_of(p.name)  # only a registered identity gets a token
    return Token(identity=p.name, token=call.services.home.client_token(p.name))
