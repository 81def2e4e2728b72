"""The governance file's rules, read and judged: tiers, pins, approval rules, budget
defaults.

`canon/governance.toml` says who may do what. This module only reads and decides; it
never touches a file or the ledger (`govern.governance` does: signing, verifying, the
read-only verdict). Every decision fails closed: what the file does not allow is denied,
a capability or resource nobody names is denied, and a file that cannot be read as a
whole is no policy at all (keel turns read-only rather than guess).

Tiers bound what pins may grant:

- `T0` the operator: everything, governance included; needs no pins.
- `T1` a trusted writer: whatever its pins grant, but never governance, identities,
  secrets, canon (the operator's own voice) or approvals of its own requests.
- `T2` read-only: only capabilities that read (`*.read`, `recall.query`).
- `T3` public artifacts only (`public.read`).

A pin is a named allow-list over capabilities and, where a capability takes a resource,
over resources of that kind: memory surfaces, cadence job kinds, commands (an absolute
argv[0] and a pattern every argument must match, never shell text), file roots, outbound
hosts and working-memory scopes. A call's resource kinds must each be listed by the pin
that grants its capability; a kind the pin leaves out is denied.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import BadInput

TIERS = ("T0", "T1", "T2", "T3")
Tier = Literal["T0", "T1", "T2", "T3"]
#: Capabilities only T0 ever holds, whatever a pin says.
T0_ONLY = ("governance.*", "identity.manage", "secret.manage", "canon.write")
#: What a read-only identity may be granted at most.
T2_MAY = ("*.read", "recall.query")
T3_MAY = ("public.read",)
#: Resource kinds a call may name, and the pin field that allows each.
RESOURCE_KINDS = ("surface", "job_kind", "command", "file", "host", "scope")

_CAPABILITY = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_*]+)+$|^\*$")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Command(_Strict):
    """A command a pin allows: an absolute program path and a pattern (a Python regular
    expression) that each argument must match in full. No `args`: no arguments at all."""

    path: Annotated[str, Field(min_length=2)]
    args: str | None = None
    max_args: Annotated[int, Field(ge=0, le=256)] = 32

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/") or "\x00" in v:
            raise ValueError(f"a command's path must be absolute, not {v!r}")
        return v

    @field_validator("args")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"args {v!r} is not a regular expression: {exc}") from None
        return v

    def allows(self, argv: Sequence[str]) -> bool:
        if not argv or argv[0] != self.path:
            return False
        args = argv[1:]
        if len(args) > self.max_args or (args and self.args is None):
            return False
        pattern = re.compile(self.args or "")
        return all(pattern.fullmatch(a) for a in args)


class Pin(_Strict):
    capabilities: list[str] = Field(default_factory=list)
    surfaces: list[str] | None = None
    job_kinds: list[str] | None = None
    commands: list[Command] | None = None
    files: list[str] | None = None
    hosts: list[str] | None = None
    scopes: list[str] | None = None

    @field_validator("capabilities")
    @classmethod
    def _capabilities(cls, v: list[str]) -> list[str]:
        for c in v:
            if not _CAPABILITY.match(c):
                raise ValueError(f"{c!r} is not a capability (like memory.write or cadence.*)")
        return v

    @field_validator("files")
    @classmethod
    def _roots(cls, v: list[str] | None) -> list[str] | None:
        for root in v or ():
            if not root.startswith("/"):
                raise ValueError(f"a file root must be an absolute path, not {root!r}")
        return v

    def grants(self, capability: str) -> bool:
        return any(_matches(pattern, capability) for pattern in self.capabilities)

    def refuses(self, kind: str, value: Any, identity: str) -> str | None:
        """Why this pin does not allow `value` of resource `kind`, or None if it does."""
        if kind == "scope" and (value == identity or str(value).startswith(identity + "/")):
            return None  # an identity's own working memory is always its own
        allowed = getattr(self, _FIELD[kind])
        if allowed is None:
            return f"its pins name no {_FIELD[kind].replace('_', ' ')}"
        if kind == "command":
            if any(c.allows(value) for c in allowed):
                return None
            return f"no pin allows the command {list(value)!r}"
        if kind == "file":
            if any(_inside(str(value), root) for root in allowed):
                return None
        elif any(fnmatch.fnmatchcase(str(value), pattern) for pattern in allowed):
            return None
        return f"no pin allows the {kind.replace('_', ' ')} {value!r}"


_FIELD = {
    "surface": "surfaces",
    "job_kind": "job_kinds",
    "command": "commands",
    "file": "files",
    "host": "hosts",
    "scope": "scopes",
}


class IdentityRules(_Strict):
    tier: Tier = "T1"
    pins: list[Annotated[str, Field(pattern=_NAME)]] = Field(default_factory=list)


class ApprovalRule(_Strict):
    """Calls that need someone else's approval before they run: those needing
    `capability` (a name or pattern), made by an identity of one of `tiers`."""

    capability: str
    tiers: list[Tier] = Field(default_factory=lambda: ["T1", "T2", "T3"])
    why: str = ""

    @field_validator("capability")
    @classmethod
    def _capability(cls, v: str) -> str:
        if not _CAPABILITY.match(v):
            raise ValueError(f"{v!r} is not a capability (like cadence.command)")
        if _matches(v, "secret.manage"):
            raise ValueError(
                f"{v!r} would hold secret.manage for approval, and a request is stored: a "
                "secret's value never is"
            )
        return v


#: The operator's rules when the file does not name it.
_OPERATOR = IdentityRules(tier="T0")


class Budget(_Strict):
    """Spending limits for an agent's runs (enforced once agents run under keel)."""

    tokens_per_day: Annotated[int, Field(ge=0)] | None = None
    usd_per_day: Annotated[float, Field(ge=0)] | None = None
    turns_per_run: Annotated[int, Field(ge=0)] | None = None
    seconds_per_run: Annotated[int, Field(ge=0)] | None = None


class Policy(_Strict):
    """The whole governance file."""

    format: Literal[1]
    defaults: IdentityRules = Field(default_factory=IdentityRules)
    identities: dict[Annotated[str, Field(pattern=_NAME)], IdentityRules] = Field(
        default_factory=dict
    )
    pins: dict[Annotated[str, Field(pattern=_NAME)], Pin] = Field(default_factory=dict)
    approvals: list[ApprovalRule] = Field(default_factory=list)
    approval_expiry: Annotated[str, Field(pattern=r"^[0-9]+[smhd]$")] = "7d"
    budgets: dict[str, Budget] = Field(default_factory=dict)

    # -- reading --------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str, operator: str) -> Policy:
        """The policy in `text`, or BadInput saying in one sentence what is wrong."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise BadInput(f"the governance file is not valid TOML: {exc}") from None
        try:
            policy = cls.model_validate(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "the file"
            raise BadInput(f"the governance file: {where}: {err['msg']}") from None
        policy._consistent(operator)
        return policy

    def _consistent(self, operator: str) -> None:
        every = [("defaults", self.defaults), *self.identities.items()]
        for name, rules in every:
            for pin in rules.pins:
                if pin not in self.pins:
                    raise BadInput(
                        f"the governance file: {name} names the pin {pin!r}, "
                        "which it does not define"
                    )
        if self.identities.get(operator, IdentityRules(tier="T0")).tier != "T0":
            raise BadInput(
                f"the governance file: the operator {operator!r} must stay T0 "
                "(it is who signs this file)"
            )
        if self.defaults.tier == "T0":
            raise BadInput("the governance file: defaults cannot be T0 (name each operator)")
        expiry_seconds(self.approval_expiry)

    def unknown_capabilities(self, known: Iterable[str], *, pins_only: bool = False) -> list[str]:
        """Capabilities the file names that no operation needs (a typo grants nothing,
        but `keel governance check` says so; signing refuses one in a pin)."""
        known = set(known)
        named = [c for pin in self.pins.values() for c in pin.capabilities]
        if not pins_only:
            named += [r.capability for r in self.approvals]
        return sorted({c for c in named if not any(_matches(c, k) for k in known)})

    # -- deciding -------------------------------------------------------------------------
    @cached_property
    def decided(self) -> dict[tuple[str, str, str], Decision]:
        """Decisions already made that touch no resource (the policy never changes)."""
        return {}

    def rules_for(self, identity: str, operator: str, role: str | None = None) -> IdentityRules:
        """The rules `identity` acts under. The operator, and a node — a machine of the
        operator's that joined with the operator's signature — are T0 unless the file
        names them; anyone else not named gets the defaults."""
        if identity == operator or role == "node":
            return self.identities.get(identity, _OPERATOR)
        return self.identities.get(identity, self.defaults)

    def decide(
        self,
        identity: str,
        operator: str,
        capability: str,
        resources: Mapping[str, Sequence[Any]] | None = None,
    ) -> Decision:
        """Whether `identity` may use `capability` on `resources` (kind -> values). A
        policy never changes once read, so decisions that touch no resource are kept (the
        door asks on every call)."""
        if not resources:
            key = (identity, operator, capability)
            found = self.decided.get(key)
            if found is None:
                found = self.decided[key] = self._decide(identity, operator, capability, None)
            return found
        return self._decide(identity, operator, capability, resources)

    def _decide(
        self,
        identity: str,
        operator: str,
        capability: str,
        resources: Mapping[str, Sequence[Any]] | None,
    ) -> Decision:
        rules = self.rules_for(identity, operator)
        if rules.tier == "T0":
            return Decision(True, rules.tier)
        if not tier_may(rules.tier, capability):
            return Decision(False, rules.tier, f"a {rules.tier} identity never holds it")
        granting = [self.pins[p] for p in rules.pins if self.pins[p].grants(capability)]
        if not granting:
            return Decision(False, rules.tier, "no pin grants it")
        reasons = []
        for pin in granting:  # one pin must allow the capability and every resource
            reason = next(
                (
                    why
                    for kind, values in (resources or {}).items()
                    for value in values
                    if (why := pin.refuses(kind, value, identity))
                ),
                None,
            )
            if reason is None:
                return Decision(True, rules.tier)
            reasons.append(reason)
        return Decision(False, rules.tier, reasons[0])

    def needs_approval(self, tier: str, capability: str) -> ApprovalRule | None:
        return next(
            (r for r in self.approvals if tier in r.tiers and _matches(r.capability, capability)),
            None,
        )


@dataclass(frozen=True)
class Decision:
    allowed: bool
    tier: str
    reason: str = ""


def tier_may(tier: str, capability: str) -> bool:
    """Whether an identity of `tier` may ever hold `capability`, whatever its pins."""
    if tier == "T0":
        return True
    if any(_matches(p, capability) for p in T0_ONLY):
        return False
    if tier == "T2":
        return any(_matches(p, capability) for p in T2_MAY)
    if tier == "T3":
        return any(_matches(p, capability) for p in T3_MAY)
    return True


def _matches(pattern: str, capability: str) -> bool:
    """`memory.write` matches itself; `memory.*` matches `memory.write`; `*` everything."""
    return fnmatch.fnmatchcase(capability, pattern)


def _inside(path: str, root: str) -> bool:
    """Whether `path` is `root` or below it, `..` resolved (a caller resolves symlinks)."""
    p, r = PurePosixPath(posixpath.normpath(path)), PurePosixPath(posixpath.normpath(root))
    return p == r or r in p.parents


def expiry_seconds(text: str) -> int:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    seconds = int(text[:-1]) * units[text[-1]]
    if not 60 <= seconds <= 366 * 86400:
        raise BadInput(f"the governance file: approval_expiry {text!r} must be 1m to 366d")
    return seconds
