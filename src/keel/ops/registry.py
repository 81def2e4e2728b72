"""Operations, each defined once: a name, a typed input and output, whether it writes, and
the capability it needs.

An operation is a plain function `handler(call, params) -> result` registered with the
`operation` decorator; its input and output types come from its annotations, its summary
and description from its docstring. Surfaces (CLI, HTTP, MCP, the Python facade) never
call handlers themselves: they name an operation and hand the caller's raw arguments to
the door (`keel.ops.door`), which validates them against the input model, checks the
capability and only then runs the handler. So a rule put in the door holds on every path.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter

from ..errors import NotFound

#: Where each family of operations is defined (the first part of its name). `get` imports
#: only the module a call needs, so one command does not build every operation's models;
#: `load()` imports them all.
MODULES = {
    "identity": "identity",
    "ledger": "ledger",
    "schema": "ledger",
    "branch": "ledger",
    "memory": "memory",
    "wiki": "wiki",
    "recall": "recall",
    "vault": "vault",
    "cadence": "cadence",
    "status": "runtime",
    "events": "runtime",
    "health": "runtime",
    "service": "runtime",
    "governance": "governance",
    "audit": "governance",
    "approval": "approvals",
    "secret": "secrets",
    "canon": "cadence",
    "node": "nodes",
    "file": "files",
}

Capability = str | Callable[[Any], str]
#: What a call touches that pins may restrict: resource kind -> values, from the validated
#: input and the caller's identity (kinds: `keel.govern.policy.RESOURCE_KINDS`).
Resources = Mapping[str, Sequence[Any]] | Callable[[Any, str], Mapping[str, Sequence[Any]]]


@dataclass(frozen=True)
class Operation:
    """One thing keel does, as every surface sees it."""

    name: str
    handler: Callable[[Any, Any], Any]
    input: type[BaseModel]
    output: Any  # a pydantic model, or a typing form such as list[Model]
    writes: bool
    capability: Capability
    #: Every capability this operation may need (several when it depends on the input).
    capabilities: tuple[str, ...]
    summary: str
    description: str
    tags: tuple[str, ...] = field(default=())
    resources: Resources = field(default_factory=dict)
    #: Runs while the governance file is unsigned: it is how keel leaves that state.
    repairs: bool = False
    #: What the call depends on, as JSON-ready data from (call, validated input): kept
    #: with a request for approval and compared again before the approved action runs.
    basis: Callable[[Any, Any], Any] | None = None
    #: Checks (call, validated input) a call must pass before it becomes a request for
    #: approval, so nobody is asked to approve what could never run (the handler checks
    #: again when it runs).
    precheck: Callable[[Any, Any], None] | None = None

    def capability_for(self, params: BaseModel) -> str:
        """The capability this call needs, given its validated input."""
        return self.capability(params) if callable(self.capability) else self.capability

    def resources_for(self, params: BaseModel, identity: str) -> Mapping[str, Sequence[Any]]:
        """What this call touches that a pin may restrict."""
        return self.resources(params, identity) if callable(self.resources) else self.resources

    @property
    def output_adapter(self) -> TypeAdapter:
        return _adapter(self.output)

    def dump(self, result: Any) -> Any:
        """The result as JSON-ready data: the one JSON shape of it on every surface."""
        return self.output_adapter.dump_python(result, mode="json", by_alias=True)


_ADAPTERS: dict[Any, TypeAdapter] = {}


def _adapter(tp: Any) -> TypeAdapter:
    key = repr(tp)
    if key not in _ADAPTERS:
        _ADAPTERS[key] = TypeAdapter(tp)
    return _ADAPTERS[key]


OPERATIONS: dict[str, Operation] = {}


def operation(
    name: str,
    *,
    capability: Capability,
    writes: bool,
    capabilities: Iterable[str] = (),
    resources: Resources | None = None,
    repairs: bool = False,
    basis: Callable[[Any, Any], Any] | None = None,
    precheck: Callable[[Any, Any], None] | None = None,
) -> Callable[[Callable], Callable]:
    """Register `handler(call, params) -> result` as the operation `name`.

    `capability` is a string, or a function of the validated input for operations whose
    capability depends on what is asked (a command job needs more than a probe); then
    `capabilities` lists every value it can return. `resources` says what the call
    touches that a pin may restrict (a memory surface, a job kind, a command's argv, a
    working-memory scope): a mapping, or a function of the validated input and the
    caller's identity.
    """

    def register(handler: Callable) -> Callable:
        hints = typing.get_type_hints(handler)
        params = list(inspect.signature(handler).parameters)
        if len(params) != 2:
            raise TypeError(f"operation {name}: a handler takes (call, params)")
        model = hints[params[1]]
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"operation {name}: its input must be a pydantic model")
        caps = tuple(capabilities) or ((capability,) if isinstance(capability, str) else ())
        if not caps:
            raise TypeError(f"operation {name}: list the capabilities it may need")
        doc = inspect.cleandoc(handler.__doc__ or name)
        summary, _, description = doc.partition("\n\n")
        if name in OPERATIONS:
            raise ValueError(f"operation {name} is defined twice")
        OPERATIONS[name] = Operation(
            name=name,
            handler=handler,
            input=model,
            output=hints["return"],
            writes=writes,
            capability=capability,
            capabilities=caps,
            summary=" ".join(summary.split()),
            description=description.strip(),
            tags=(name.split(".")[0],),
            resources=resources if resources is not None else {},
            repairs=repairs,
            basis=basis,
            precheck=precheck,
        )
        return handler

    return register


def load() -> dict[str, Operation]:
    """Every operation keel offers (importing the modules that define them)."""
    for module in sorted(set(MODULES.values())):
        importlib.import_module(f"{__package__}.{module}")
    return OPERATIONS


def get(name: str) -> Operation:
    if name not in OPERATIONS:
        module = MODULES.get(name.partition(".")[0])
        if module is not None:
            importlib.import_module(f"{__package__}.{module}")
    try:
        return OPERATIONS[name]
    except KeyError:
        raise NotFound(f"there is no operation {name!r}") from None
