"""keel for Python programs: `keel.open(home)` gives the same operations as the CLI, the
HTTP API and MCP, through the same door, as one identity.

    import keel
    with keel.open("~/.keel") as k:                 # the operator; identity="claude-code"
        k.memory.observe("alice", "Alice moved to Berlin", fact="lives_in", value="Berlin")
        k.recall.search("where does Alice live").results[0].text
        k.cadence.list()

Each operation `a.b.c` is the method `k.a.b.c(...)`: positional arguments fill the input's
fields in order, keywords by name; the result is the operation's typed output (a pydantic
model, or a list or dict of them). A name that is a Python keyword takes a trailing
underscore (`k.vault.import_(...)`). Mistakes raise `keel.errors.KeelError` subclasses.
Opening writes nothing (but a home made by an older keel has keel's own attributes
declared the first time it is used).
"""

from __future__ import annotations

import inspect
import keyword
from pathlib import Path
from typing import Any

from ..errors import BadInput
from . import registry
from .door import Caller, Door
from .services import Services


class Operation:
    """One operation, bound to a facade's door and identity."""

    def __init__(self, keel: Keel, op: registry.Operation):
        self._keel, self._op = keel, op
        self.__name__ = op.name.rsplit(".", 1)[-1]
        self.__doc__ = f"{op.summary}\n\n{op.description}".strip()
        fields = op.input.model_fields
        self._order = list(fields)
        self.__signature__ = inspect.Signature(
            [
                inspect.Parameter(
                    name,
                    inspect.Parameter.POSITIONAL_OR_KEYWORD,
                    default=inspect.Parameter.empty if f.is_required() else f.default,
                    annotation=f.annotation,
                )
                for name, f in fields.items()
            ],
            return_annotation=op.output,
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) > len(self._order):
            raise BadInput(f"{self._op.name} takes at most {len(self._order)} arguments")
        for name, value in zip(self._order, args, strict=False):
            if name in kwargs:
                raise BadInput(f"{self._op.name} got {name} twice")
            kwargs[name] = value
        return self._keel.call(self._op.name, kwargs)

    def __repr__(self) -> str:
        return f"<keel operation {self._op.name}>"


class Namespace:
    """Operations that share a prefix (`k.memory`, `k.memory.entity`)."""

    def __init__(self, path: str):
        self._path = path

    def __repr__(self) -> str:
        names = sorted(n for n in vars(self) if not n.startswith("_"))
        return f"<keel {self._path}: {', '.join(names)}>"


class Keel:
    """One keel home, opened for one identity."""

    def __init__(self, services: Services, identity: str | None = None):
        self._services = services
        self.door = Door(services)
        #: The identity every call is made as.
        self.caller = identity or services.home.identity
        for op in registry.load().values():
            self._bind(op)

    def _bind(self, op: registry.Operation) -> None:
        *path, last = [_python_name(p) for p in op.name.split(".")]
        node: Any = self
        for i, part in enumerate(path):
            child = getattr(node, part, None)
            if child is None:
                child = Namespace(".".join(path[: i + 1]))
                setattr(node, part, child)
            node = child
        setattr(node, last, Operation(self, op))

    def call(self, name: str, arguments: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """Run the operation `name` (e.g. "memory.observe") with named arguments."""
        return self.door.call(name, {**(arguments or {}), **kwargs}, Caller(self.caller))

    @property
    def home(self) -> Path:
        return self._services.home.path

    def close(self) -> None:
        self._services.close()

    def __enter__(self) -> Keel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<keel {self.home} as {self.caller}>"


def _python_name(part: str) -> str:
    return part + "_" if keyword.iskeyword(part) else part


def open_keel(home: str | Path | None = None, identity: str | None = None) -> Keel:
    """The keel home at `home` (default: KEEL_HOME, else ~/.keel), as `identity` (default:
    the home's operator). The home must exist (`keel.init` makes one)."""
    return Keel(Services.open(home), identity)


def init_keel(home: str | Path | None = None) -> Keel:
    """Create the home if it does not exist (idempotent), and open it as its operator."""
    services, _created = Services.init(home)
    return Keel(services)
