"""Node operations: approving a machine that asked to join, and listing the nodes.

A node is an identity with the role `node` and a home of its own on a machine that shares
the ledger (`keel.govern.join`). Approving one is the operator's signed registration of
the key the joining machine showed; its fingerprint is what the two people compare.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ..cadence.runs import runs_of
from ..errors import BadInput, Conflict
from ..govern.join import NODE_ATTRS, fingerprint
from ..ledger.instants import format_instant
from .call import Call
from .identity import IdentityName
from .models import Input, NoArguments, Output
from .registry import operation


class Node(Output):
    name: str
    role: str | None
    fingerprint: str | None = Field(description="Of its public key (none: revoked).")
    host: str | None = Field(None, description="The machine it last started on.")
    version: str | None = Field(None, description="The keel version it last started.")
    started: str | None = Field(None, description="When its daemon last started.")
    last_seen: str | None = Field(None, description="When it last signed a transaction.")
    holds: list[str] = Field(
        default_factory=list, description="The runs its daemon holds now (under a lease)."
    )


def _node(call: Call, found: dict) -> Node:
    ledger = call.ledger
    facts = ledger.view().get(f"node:{found['name']}") or {}
    last = ledger.last_tx_of(found["name"])
    started = facts.get(NODE_ATTRS["started"])
    process = facts.get(NODE_ATTRS["process"])
    holds = [
        str(r.get("keel.run/key"))
        for r in (runs_of(ledger, outcome="running") if process else [])
        if r.get("keel.run/node") == process
    ]
    return Node(
        name=found["name"],
        role=found["role"],
        fingerprint=fingerprint(bytes.fromhex(found["keys"][0])) if found["keys"] else None,
        host=facts.get(NODE_ATTRS["host"]),
        version=facts.get(NODE_ATTRS["version"]),
        started=format_instant(started) if started else None,
        last_seen=format_instant(last.time) if last else None,
        holds=sorted(holds),
    )


@operation("node.list", capability="identity.read", writes=False)
def node_list(call: Call, p: NoArguments) -> list[Node]:
    """The machines that act on this ledger: the operator's and every joined node, with
    host, version, when each last started and when it last signed anything."""
    return [
        _node(call, found)
        for found in call.ledger.identities()
        if found["role"] in ("operator", "node")
    ]


class ApproveIn(Input):
    name: IdentityName
    key: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$", description="Its public key, hex.")]


@operation("node.approve", capability="identity.manage", writes=True)
def node_approve(call: Call, p: ApproveIn) -> Node:
    """Register the key a joining machine showed (`keel node join` prints it, with its
    fingerprint): from now on that machine acts on the ledger as node NAME."""
    ledger = call.ledger
    found = next((i for i in ledger.identities() if i["name"] == p.name), None)
    if found is not None:
        if p.key in found["keys"]:
            return _node(call, found)
        raise Conflict(f"{p.name!r} is already an identity of this ledger, with another key")
    if call.services.home.identity == p.name:
        raise BadInput(f"{p.name!r} is this home's own name")
    ledger.register_identity(p.name, bytes.fromhex(p.key), "node")
    found = next(i for i in ledger.identities() if i["name"] == p.name)
    return _node(call, found)
