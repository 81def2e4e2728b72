"""Secret operations: set, list, remove, grant and revoke — never read back.

No operation returns a secret's value: it is given only to the jobs whose owner is granted
it, in their environment (`keel.govern.secrets`). Setting one takes the value as input
(from stdin or a prompt on the CLI, the JSON body over HTTP — never a command line), keeps
it encrypted in the home's keys folder, and records only the name and a new version.
"""

from __future__ import annotations

import contextlib
from typing import Annotated

from pydantic import Field, SecretStr

from ..errors import BadInput, NotFound
from ..govern import secrets
from .call import Call
from .identity import IdentityName
from .models import Input, NoArguments, Output
from .registry import operation

SecretName = Annotated[
    str,
    Field(
        pattern=secrets.NAME.pattern,
        description="A letter, then letters, digits, _ . - (at most 64).",
    ),
]


class Secret(Output):
    name: str
    version: int = Field(description="How many times it was set.")
    grants: list[str] = Field(description="Identities whose jobs may be given it.")
    set_at: str | None = Field(None, description="When it was last set.")
    uses: int = Field(0, description="How many runs were given it.")
    last_use: str | None = Field(None, description="When a run last asked for it.")


def _secret(call: Call, name: str) -> Secret:
    ledger = call.ledger
    found = secrets.record(ledger, name)
    if found.get("keel.secret/state") != "set":
        raise NotFound(f"there is no secret named {name!r}")
    view = ledger.view()
    uses = [
        u
        for u in view.find("keel.secret-use/secret", name)
        if view.value(u, "keel.secret-use/outcome") == "given"
    ]
    set_at = view.history(secrets.entity(name), "keel.secret/version")
    last_use = max(
        (view.history(u, "keel.secret-use/run")[0]["tx_time"] for u in uses), default=None
    )
    return Secret(
        name=name,
        version=int(found.get("keel.secret/version") or 0),
        grants=sorted(found.get("keel.secret/grant") or []),
        set_at=set_at[-1]["tx_time"] if set_at else None,
        uses=len(uses),
        last_use=last_use,
    )


class SecretSetIn(Input):
    name: SecretName
    value: SecretStr = Field(description="The value (never shown again, never stored in clear).")


@operation("secret.set", capability="secret.manage", writes=True)
def secret_set(call: Call, p: SecretSetIn) -> Secret:
    """Set a secret (a new version if it exists). Jobs given it by an earlier version get
    this one from their next run."""
    value = secrets.check_value(p.value.get_secret_value())
    box = call.services.secrets
    with contextlib.suppress(NotFound):
        if box.value(p.name) == value and secrets.is_set(call.ledger, p.name):
            return _secret(call, p.name)  # the same value again: nothing changes
    before = box.values().get(p.name)
    box.put(p.name, value)  # first, so the record below is already redacted of it
    try:
        call.ledger.transact(secrets.set_ops(call.ledger, p.name), f"set secret {p.name}")
    except BaseException:
        if before is None:
            box.drop(p.name)
        else:
            box.put(p.name, before)
        raise
    return _secret(call, p.name)


@operation("secret.list", capability="secret.read", writes=False)
def secret_list(call: Call, p: NoArguments) -> list[Secret]:
    """Every secret by name, with its version, grants and uses — never its value."""
    view = call.ledger.view()
    names = sorted(
        view.value(e, "keel.secret/name")
        for e in view.find("keel.secret/state", "set")
        if e.startswith("secret:")
    )
    return [_secret(call, n) for n in names]


class SecretNameIn(Input):
    name: SecretName


class Removed(Output):
    name: str
    removed: bool


@operation("secret.rm", capability="secret.manage", writes=True)
def secret_rm(call: Call, p: SecretNameIn) -> Removed:
    """Remove a secret: its value is deleted from the box and its grants end; the ledger
    keeps that it existed. A job that asks for it afterwards fails, saying so."""
    ledger = call.ledger
    if not secrets.is_set(ledger, p.name):
        raise NotFound(f"there is no secret named {p.name!r}")
    ledger.transact(secrets.remove_ops(ledger, p.name), f"remove secret {p.name}")
    call.services.secrets.drop(p.name)
    return Removed(name=p.name, removed=True)


class GrantIn(Input):
    name: SecretName
    identity: IdentityName


def _grant(call: Call, p: GrantIn, granted: bool) -> Secret:
    ledger = call.ledger
    if not secrets.is_set(ledger, p.name):
        raise NotFound(f"there is no secret named {p.name!r}")
    if granted:
        call.services.role_of(p.identity)  # only an identity the ledger knows
    holds = p.identity in secrets.grants(ledger, p.name)
    if holds != granted:
        verb = "grant" if granted else "revoke"
        ledger.transact(secrets.grant_ops(p.name, p.identity, granted), f"{verb} secret {p.name}")
    elif not granted:
        raise BadInput(f"secret {p.name!r} is not granted to {p.identity!r}")
    return _secret(call, p.name)


@operation("secret.grant", capability="secret.manage", writes=True)
def secret_grant(call: Call, p: GrantIn) -> Secret:
    """Let the jobs an identity owns be given a secret."""
    return _grant(call, p, True)


@operation("secret.revoke", capability="secret.manage", writes=True)
def secret_revoke(call: Call, p: GrantIn) -> Secret:
    """Stop giving a secret to an identity's jobs (from their next run)."""
    return _grant(call, p, False)
