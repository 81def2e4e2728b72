"""The door: the one place every operation passes, with the caller's identity.

Every surface — the CLI, the HTTP API, MCP, the Python facade — calls `Door.call(name,
arguments, caller)`. The door, in this order:

1. finds the operation (an unknown name is `NotFound`);
2. knows who is calling: the identity must be registered in the ledger and not revoked
   (`Unauthorized`);
3. reads the governance file's verdict: if the file may not be acted on (missing,
   invalid, unsigned), only the operator gets through, to read and to sign it
   (`ReadOnly` for everyone else, naming the problem);
4. refuses a caller whose pins grant none of the operation's capabilities (`Forbidden`,
   naming the identity and capability), before reading its arguments;
5. validates the raw arguments once, against the operation's input model (`BadInput`, one
   sentence), refusing text that is not Unicode and data nested too deeply;
6. checks the exact capability the validated call needs and every resource it touches
   (a memory surface, a job kind, a command's argv, a working-memory scope) against the
   caller's pins;
7. refuses writes while keel is read-only (its ledger failed verification, or its
   governance file may not be acted on);
8. holds a call that a governance rule says needs approval: the exact action is recorded
   as a request (`Pending`, with its id) and runs once, as the caller, when someone else
   approves it (`keel.ops.approvals`);
9. runs the handler, whose transactions are signed as the caller and stamped with the
   operation and capability.

Every refusal at 4 or 6 is recorded in the ledger as evidence (`keel audit`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from ..errors import BadInput, Forbidden, KeelError, Pending, ReadOnly, Unauthorized
from ..govern import approvals
from ..govern.policy import expiry_seconds
from ..govern.secrets import Redactor
from . import registry
from .call import Call, Progress

if TYPE_CHECKING:
    from ..govern.policy import Policy
    from .services import Services

#: How deeply an argument may nest (a transaction's values are JSON).
MAX_DEPTH = 64
_SCALARS = frozenset({int, float, bool, type(None)})


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
        *,
        approval: str = "",
    ):
        """Run operation `name` for `caller` with raw `arguments`; returns its typed output.
        `progress(done, total)` hears how long work goes on. `approval` is set when an
        approved request runs its action (the approval rule is then already met).

        What comes back — the output, or the error's sentence — is redacted of every
        secret's value, whatever produced it."""
        try:
            result = self._call(name, arguments, caller, progress, approval)
        except KeelError as exc:
            if self.services.secrets.redactor() is not None:
                exc.args = tuple(self.services.redact(a) for a in exc.args)
            raise
        redactor = self.services.secrets.redactor()
        return result if redactor is None else _redacted(redactor, result)

    def _call(self, name, arguments, caller: Caller, progress, approval: str):
        op, params, call = self.check(name, arguments, caller, progress, approval)
        try:
            rule = call.policy.needs_approval(call.tier, call.capability) if call.policy else None
            if rule is not None and not approval:
                if op.precheck is not None:
                    op.precheck(call, params)
                raise self._hold_for_approval(call, op, params, rule.why, call.policy)
            return op.handler(call, params)
        finally:
            call.close()

    def check(
        self,
        name: str,
        arguments: Mapping[str, Any] | BaseModel | None,
        caller: Caller,
        progress: Progress | None = None,
        approval: str = "",
    ) -> tuple[registry.Operation, BaseModel, Call]:
        """Steps 1-7: everything the door decides before an operation runs. Returns the
        operation, its validated input and the call it would run as (close it)."""
        op = registry.get(name)
        services = self.services
        role = services.role_of(caller.identity)
        verdict = services.verdict()
        policy = verdict.policy
        operator = services.home.operator
        damaged = services.home.integrity_problem()
        if policy is None:
            # Fail closed: with no governance to go by, only an operator acts, to read and
            # to put the file right.
            if role != "operator":
                raise ReadOnly(f"keel is read-only: {verdict.problem or 'it has no ledger yet'}")
            tier = "T0"
        else:
            tier = policy.rules_for(caller.identity, operator, role).tier
            if tier != "T0":
                self._refuse_early(op, arguments, caller, policy, operator)
        params = validate(op, arguments)
        capability = op.capability_for(params)
        if policy is not None and tier != "T0":
            decision = policy.decide(
                caller.identity, operator, capability, op.resources_for(params, caller.identity)
            )
            if not decision.allowed:
                raise self._deny(op, caller, capability, decision.reason)
        if op.writes:
            problem = damaged or verdict.problem  # what `services.read_only()` says
            if problem and not (op.repairs and not damaged):
                raise ReadOnly(f"keel is read-only: {problem}")
        call = Call(
            services,
            caller,
            role,
            progress,
            operation=op.name,
            capability=capability,
            tier=tier,
            policy=policy,
            approval=approval,
            door=self,
        )
        return op, params, call

    def _hold_for_approval(self, call: Call, op, params, why: str, policy: Policy) -> Pending:
        """Record the exact action as a request for approval, signed by the requester; the
        caller gets its id at once and the action runs once, when someone else approves."""
        services = call.services
        approval_id = approvals.new_id()
        ledger = services.ledger()
        expires = ledger.clock() + expiry_seconds(policy.approval_expiry) * 1_000_000
        ops = approvals.request_ops(
            approval_id,
            op.name,
            params.model_dump(mode="json"),
            call.identity,
            call.caller.surface,
            call.capability,
            op.basis(call, params) if op.basis else None,
            why,
            expires,
        )
        ledger.transact(
            ops, f"request approval for {op.name}", signer=services.signer(call.identity)
        )
        reason = f" ({why})" if why else ""
        return Pending(
            f"{op.name} waits for approval {approval_id}{reason}: "
            f"'keel approvals show {approval_id}' says when it is answered",
            approval_id,
        )

    def _refuse_early(self, op, arguments, caller: Caller, policy: Policy, operator: str) -> None:
        """Refuse, before reading a stranger's arguments, an operation none of whose
        capabilities its pins grant (naming the exact one when the arguments tell it)."""
        decisions = [policy.decide(caller.identity, operator, c) for c in op.capabilities]
        if any(d.allowed for d in decisions):
            return
        try:
            needed = op.capability_for(validate(op, arguments))
        except BadInput:
            needed = " or ".join(op.capabilities)
        raise self._deny(op, caller, needed, decisions[0].reason)

    def _deny(self, op, caller: Caller, capability: str, reason: str) -> Forbidden:
        """The refusal, recorded in the ledger as evidence (who, what, where, why)."""
        message = f"{caller.identity!r} may not {op.name}: it needs {capability!r} and {reason}"
        self.services.record_denial(caller.identity, op.name, capability, caller.surface, reason)
        return Forbidden(message, capability, op.name)

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


def _redacted(redactor: Redactor, value: Any) -> Any:
    """An operation's output with every secret's value redacted (itself when none was)."""
    if isinstance(value, BaseModel):
        data = value.model_dump()
        clean = redactor(data)
        return value if clean is data else type(value).model_validate(clean)
    if isinstance(value, list):
        return [_redacted(redactor, v) for v in value]
    return redactor(value)


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
    back) and nesting deeper than `MAX_DEPTH`. (On every call: kept to one pass that
    skips numbers and plain ASCII at once.)"""
    try:
        _walk(data, 0)
    except UnicodeEncodeError:
        raise BadInput(f"{what} hold text that is not valid Unicode") from None
    except _TooDeep:
        raise BadInput(f"{what} nest deeper than {MAX_DEPTH} levels") from None


class _TooDeep(Exception):
    pass


def _walk(item: object, depth: int) -> None:
    kind = type(item)
    if kind is str:
        if not item.isascii():  # type: ignore[union-attr]
            item.encode("utf-8")  # type: ignore[union-attr]
        return
    if kind in _SCALARS:
        return
    if depth >= MAX_DEPTH:
        raise _TooDeep
    if kind is dict or isinstance(item, Mapping):
        for key, value in item.items():  # type: ignore[union-attr]
            _walk(key, depth + 1)
            _walk(value, depth + 1)
    elif kind is list or kind is tuple:
        for value in item:  # type: ignore[union-attr]
            _walk(value, depth + 1)


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
