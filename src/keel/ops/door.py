"""The door: the one place every operation passes, with the caller's identity.

Every surface — the CLI, the HTTP API, MCP, the Python facade — calls `Door.call(name,
arguments, caller)`. The door, in this order:

1. finds the operation (an unknown name is `NotFound`);
2. knows who is calling: the identity must be registered in the ledger (`Unauthorized`);
3. refuses a caller who holds none of the operation's capabilities (`Forbidden`, naming
   the capability), before reading its arguments;
4. validates the raw arguments once, against the operation's input model (`BadInput`, one
   sentence), refusing text that is not Unicode and data nested too deeply;
5. checks the exact capability the validated call needs (a command job needs more than a
   probe);
6. refuses writes while keel is read-only (its ledger failed verification);
7. runs the handler.

Until governance grants capabilities by signed pins, the rule is fixed: the operator may do
everything; any other identity may read memory, recall, and write the memory surfaces other
than canon (`CLIENT_CAPABILITIES`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from ..errors import BadInput, Forbidden, ReadOnly, Unauthorized
from . import registry
from .call import Call, Progress

if TYPE_CHECKING:
    from .services import Services

#: What an identity that is not an operator may do until governance says otherwise.
CLIENT_CAPABILITIES = frozenset({"memory.read", "memory.write", "recall.query"})
#: How deeply an argument may nest (a transaction's values are JSON).
MAX_DEPTH = 64


@dataclass(frozen=True)
class Caller:
    """Who is calling, and through which surface (for errors and evidence)."""

    identity: str
    surface: str = "python"


class Door:
    def __init__(self, services: Services):
        self.services = services

    def call(
        self,
        name: str,
        arguments: Mapping[str, Any] | BaseModel | None,
        caller: Caller,
        progress: Progress | None = None,
    ):
        """Run operation `name` for `caller` with raw `arguments`; returns its typed output.
        `progress(done, total)` hears how long work goes on."""
        op = registry.get(name)
        role = self.services.role_of(caller.identity)
        operator = role == "operator"
        if not operator and not CLIENT_CAPABILITIES.intersection(op.capabilities):
            # Refused whatever the arguments say; name the exact capability if they tell it.
            try:
                needed = op.capability_for(validate(op, arguments))
            except BadInput:
                needed = " or ".join(op.capabilities)
            raise _forbidden(op, caller, needed)
        params = validate(op, arguments)
        capability = op.capability_for(params)
        if not operator and capability not in CLIENT_CAPABILITIES:
            raise _forbidden(op, caller, capability)
        if op.writes:
            problem = self.services.read_only()
            if problem:
                raise ReadOnly(f"keel is read-only: {problem}")
        return op.handler(Call(self.services, caller, role, progress), params)

    def identify(self, token: str | None) -> str:
        """The identity a bearer token belongs to (compared in constant time)."""
        if not token:
            raise Unauthorized("this needs an 'Authorization: Bearer <token>' header")
        identity = self.services.home.identity_for(token)
        if identity is None:
            raise Unauthorized("the token belongs to no keel identity")
        return identity

    def admit(self, identity: str) -> str:
        """Check, before a long-lived session serves it (stdio MCP), that `identity` may act
        here at all: registered in the ledger, with its key in this home."""
        self.services.role_of(identity)
        self.services.signer(identity)
        return identity

    def call_json(
        self, name: str, arguments: Mapping[str, Any] | BaseModel | None, caller: Caller
    ) -> Any:
        """`call`, with the result as JSON-ready data (what HTTP and MCP send)."""
        return registry.get(name).dump(self.call(name, arguments, caller))


def _forbidden(op: registry.Operation, caller: Caller, capability: str) -> Forbidden:
    return Forbidden(
        f"{caller.identity!r} may not {op.name}: it needs the capability {capability!r}, "
        "which only the operator holds",
        capability,
        op.name,
    )


def validate(op: registry.Operation, arguments: Mapping[str, Any] | BaseModel | None):
    """The operation's input model from raw arguments, or one sentence saying what is wrong."""
    if isinstance(arguments, op.input):
        return arguments
    if isinstance(arguments, BaseModel):
        arguments = arguments.model_dump()
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        raise BadInput(f"{op.name} takes an object of named arguments")
    check_shape(arguments)
    try:
        return op.input.model_validate(dict(arguments))
    except ValidationError as exc:
        raise BadInput(f"{op.name}: {validation_sentence(exc)}") from None


def check_shape(data: object, what: str = "the arguments") -> None:
    """Refuse data a stranger might send to break what comes after: text that is not valid
    Unicode (a lone surrogate has no UTF-8 form, so it could be neither stored nor sent
    back) and nesting deeper than `MAX_DEPTH`."""
    stack: list[tuple[object, int]] = [(data, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise BadInput(f"{what} nest deeper than {MAX_DEPTH} levels")
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise BadInput(f"{what} hold text that is not valid Unicode") from None
        elif isinstance(item, Mapping):
            for key, value in item.items():
                stack.append((key, depth + 1))
                stack.append((value, depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend((x, depth + 1) for x in item)


def validation_sentence(exc: ValidationError) -> str:
    """The first problem pydantic found, as one sentence a person can act on. Where a value
    could take several forms (a transaction number or text), the most specific complaint
    wins."""
    errors = exc.errors(include_url=False)
    err = next((e for e in errors if e.get("type") == "value_error"), errors[0])
    where = ".".join(str(p) for p in err.get("loc", ()) if _is_field(p)) or "the input"
    kind = err.get("type", "")
    if kind == "missing":
        return f"{where} is required"
    if kind == "extra_forbidden":
        return f"there is no argument {where!r}"
    message = str(err.get("msg", "is not valid"))
    message = message.removeprefix("Value error, ")
    message = message[0].lower() + message[1:] if message else "is not valid"
    shown = repr(err.get("input"))
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"{where}: {message} (got {shown})"


_BRANCH_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "literal"}


def _is_field(part: object) -> bool:
    """Whether a step of pydantic's error location names a field or an index, not the
    branch of a union it tried."""
    if isinstance(part, int):
        return True
    text = str(part)
    return not ("[" in text or "-" in text or text in _BRANCH_TAGS)
