"""What operations run on: one home's ledger connections, keys, recall index and — inside
the daemon — its runtime.

Every ledger connection in a keel process comes from `Services.open_ledger`, which installs
the write guards (memory's rules today, governance next), so the rules hold on every path:
the CLI, the API, MCP, the scheduler and the bus alike. Reads and writes on one thread share
one connection (`ledger()`), closed with the services.

Constructing services writes nothing. keel's own attributes are declared once, by `init`
(or, for a home made by an older keel, the first time a connection is opened).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cadence.clock import clock_from_env
from ..daemon.runtime import Runtime
from ..errors import BadInput, Corrupt, KeelError, ReadOnly, Unauthorized
from ..govern import audit, governance
from ..govern.governance import Governance, Verdict
from ..govern.home import Home, home_dir, prepare_home
from ..govern.home import init as init_home
from ..govern.join import Joined
from ..govern.join import join as join_ledger
from ..govern.secrets import SecretBox
from ..health import checks
from ..health.findings import Finding, record
from ..ledger import Ledger, PendingTx, Signer, TxResult
from ..ledger.ledger import identity_entity
from ..memory import rules
from . import schemas

if TYPE_CHECKING:
    from ..memory.recall import Recall

_UNSEEN = object()
#: The health check that reports a governance file keel may not act on.
GOVERNANCE = "governance"
#: What a read-only ledger still takes: evidence (health findings, refusals, the stamp
#: on each call's transaction) and the bus's bookkeeping (cursors, dead letters).
EVIDENCE = ("finding:", "denial:", "call:", "sub:", "dead:")


def build_runtime(services: Services) -> Runtime:
    """A runtime over `services`' guarded ledgers, with health's probe and checks."""
    runtime = Runtime(
        services.home, clock=services.clock, ledgers=services.open_guarded, hold=services.hold
    )
    services.lag_watch = checks.install(runtime)
    return runtime


class Services:
    def __init__(self, home: Home, clock: Any = None):
        self.home = home
        self.clock = clock or clock_from_env()
        self.runtime: Runtime | None = None
        self._local = threading.local()
        self._lock = threading.Lock()
        self._opened: weakref.WeakSet[Ledger] = weakref.WeakSet()
        self._signers: dict[str, Signer] = {}
        self._recall: Recall | None = None
        self._local_runtime: Runtime | None = None
        #: The daemon's samples of its bus lag (health's lag check reads them).
        self.lag_watch: checks.LagWatch | None = None
        self.governance = Governance(home.path, lambda: home.operator)
        self.secrets = SecretBox(home.keys)
        self._held: object = _UNSEEN  # the finding last recorded by `hold`
        #: identity -> (the head its role was read at, the role): the door asks on every
        #: call. A commit of this process that touches no identity carries it forward;
        #: any other change of head (another process wrote) means reading it again.
        self._roles: dict[str, tuple[int, str]] = {}
        self._identity_txs: set[int] = set()
        self._operator_found: str | None = None
        self._schema_checked = False

    @classmethod
    def open(cls, path: str | Path | None = None, clock: Any = None) -> Services:
        """The services of the home at `path` (default: KEEL_HOME), which must exist."""
        home = Home(Path(path).expanduser() if path else home_dir())
        home.config()  # a home that was never initialised is one clear sentence
        home.secure()
        return cls(home, clock)

    @classmethod
    def init(cls, path: str | Path | None = None) -> tuple[Services, bool]:
        """Create the home (idempotent) and declare keel's attributes; returns whether
        anything was created."""
        home, created = init_home(Path(path).expanduser() if path else None)
        services = cls(home)
        services._schema_checked = True
        if home.integrity_problem():
            return services, created  # a damaged ledger is not written to
        created = services._bootstrap() or created
        # The default cadence (a daily probe, an hourly doctor sweep) from the first day.
        created = bool(services.local_runtime().prepare()) or created
        return services, created

    @classmethod
    def open_or_init(cls, path: str | Path | None = None) -> Services:
        """An existing home as it is (a damaged ledger is not written to), or a new one."""
        home = Home(Path(path).expanduser() if path else home_dir())
        if home.config_path.exists():
            return cls.open(home.path)
        return cls.init(home.path)[0]

    @staticmethod
    def join(dsn: str, name: str, path: str | Path | None = None) -> Joined:
        """Make (or find) a home on this machine as node `name` of the shared ledger at
        `dsn`, with a key of its own that the operator approves (`keel.govern.join`)."""
        return join_ledger(Path(path).expanduser() if path else home_dir(), dsn, name)

    @staticmethod
    def is_registered(joined: Joined) -> bool:
        """Whether the operator has approved the key `joined` showed."""
        with Ledger.open(joined.home.db_target()) as ledger:
            found = {i["name"]: i for i in ledger.identities()}.get(joined.name)
        return found is not None and joined.public_key in found["keys"]

    @staticmethod
    def prepare(path: str | Path | None = None) -> None:
        """Make the folders, config and token of a home without a key or ledger: a home
        about to receive a ledger export (its genesis comes from the file). A home that
        exists already is left as it is."""
        prepare_home(Home(Path(path).expanduser() if path else home_dir()))

    # -- ledgers ----------------------------------------------------------------------------
    def open_guarded(self, as_name: str | None = None, clock: Any = None) -> Ledger:
        """A new connection with every write guard installed. The runtime wraps this one
        (to wake its bus on commit); everything else asks `open_ledger`."""
        ledger = self.home.ledger(as_name, clock=clock or self.clock.now)
        ledger.add_guard(self._refuse_while_read_only)
        ledger.add_guard(self._note_identity_change)
        ledger.on_commit(self._carry_roles)
        ledger.redact = self.redact
        rules.install(ledger)
        if not self._schema_checked:
            self._schema_checked = True
            if not self.home.integrity_problem():
                # A home made by an older keel. On a ledger damaged behind keel's back this
                # cannot read the schema; `keel verify` is what names the damage.
                with contextlib.suppress(Corrupt):
                    self._bootstrap()
        return ledger

    def _bootstrap(self) -> bool:
        """Declare keel's attributes, and give a home that never had governance the
        default file signed by its operator (the operator keeps everything; every other
        identity gets the default client pins). Keel does this itself, at init or on the
        first open after an upgrade, on a connection of its own: the write guards, which
        need governance to judge by, cannot be the ones to let it in. A home that once
        had a signed file is never given a new one (a missing file there is a problem to
        fix, and keel stays read-only meanwhile). Returns whether anything was written."""
        with self.home.ledger(clock=self.clock.now) as ledger:
            if ledger.signer is None:
                return False
            wrote = schemas.declare(ledger)
            if governance.accepted(ledger.view()) is not None:
                return wrote
            text = self.governance.write_default(self.home.operator)
            if text is None:
                return wrote  # the operator wrote their own: they sign it themselves
            ops = governance.sign_ops(text, ledger.signer)
            ledger.transact(ops, "sign the governance file")
        self.governance.forget()
        return True

    def _refuse_while_read_only(self, tx: PendingTx) -> None:
        """The read-only mark holds below the door too (the scheduler, the bus, a
        library caller). On top of a ledger that failed verification, or under a
        governance file that may not be acted on, only evidence is written (findings,
        denials, the stamps beside them) — and, when only governance is wrong, the
        operator's signature that puts it right."""
        damaged = self.home.integrity_problem()
        problem = damaged or self.governance.verdict(lambda: tx.view).problem
        if not problem:
            return
        touched = {d.e for d in tx.datoms if not d.e.startswith(EVIDENCE)}
        if not touched or (not damaged and touched == {governance.ENTITY}):
            return
        raise ReadOnly(f"keel is read-only: {problem}")

    def redact(self, value: Any) -> Any:
        """`value` with every secret's value redacted (itself when there is none to hide)."""
        redactor = self.secrets.redactor()
        return value if redactor is None else redactor(value)

    def open_ledger(self, as_name: str | None = None) -> Ledger:
        """A new connection of the caller's own (close it)."""
        if self.runtime is not None:
            return self.runtime.open_ledger(as_name)
        return self.open_guarded(as_name)

    def ledger(self) -> Ledger:
        """This thread's connection, opened on first use; closed when the thread ends (a
        server's worker threads come and go) or with the services, whichever is first."""
        ledger = getattr(self._local, "ledger", None)
        if ledger is None:
            ledger = self.open_ledger()
            self._local.ledger = ledger
            with self._lock:
                self._opened.add(ledger)
            weakref.finalize(threading.current_thread(), ledger.close)
        return ledger

    def signer(self, identity: str) -> Signer:
        with self._lock:
            if identity not in self._signers:
                self._signers[identity] = self.home.signer(identity)
            return self._signers[identity]

    def role_of(self, identity: str) -> str:
        """The identity's role in the ledger; an identity the ledger does not know may do
        nothing. (The door asks on every call. The home's operator, once found, is not
        asked again: no operation can revoke it.)"""
        if identity == self._operator_found:
            return "operator"
        ledger = self.ledger()
        head = ledger.store.head_id()
        with self._lock:
            known = self._roles.get(identity)
        if known is not None and known[0] == head:
            return known[1]
        found = ledger.view().get(identity_entity(identity)) or {}
        role = found.get("keel.identity/role")
        if role is None:
            if identity == self.home.operator and head == 0:
                return "operator"  # an empty ledger (a restore): its home's operator
            raise Unauthorized(f"{identity!r} is not an identity registered in this ledger")
        if not found.get("keel.identity/key"):
            raise Unauthorized(f"{identity!r} was revoked")
        with self._lock:
            self._roles[identity] = (head, role)
        if role == "operator" and identity == self.home.operator:
            self._operator_found = identity
        return role

    def _note_identity_change(self, tx: PendingTx) -> None:
        if any(d.e.startswith("identity:") for d in tx.datoms):
            with self._lock:
                self._identity_txs.add(tx.seq)

    def _carry_roles(self, result: TxResult) -> None:
        with self._lock:
            if result.tx in self._identity_txs:
                self._identity_txs.discard(result.tx)
                self._roles.clear()
                return
            for identity, (head, role) in list(self._roles.items()):
                if head == result.tx - 1:
                    self._roles[identity] = (result.tx, role)

    def record_denial(
        self, identity: str, operation: str, capability: str, surface: str, reason: str
    ) -> None:
        """Keep a refusal as evidence, signed by the operator's key (keel's own record).
        If it cannot be written the refusal still stands."""
        ops = audit.denial_ops(identity, operation, capability, surface, reason)
        with contextlib.suppress(KeelError):
            self.ledger().transact(
                ops, f"refused {operation} to {identity}", signer=self.signer(self.home.identity)
            )

    def local_runtime(self) -> Runtime:
        """The daemon's runtime in the daemon; elsewhere one that is never started, for its
        job kinds and probes, its scheduler's arithmetic and a run fired here."""
        if self.runtime is not None:
            return self.runtime
        with self._lock:
            if self._local_runtime is None:
                self._local_runtime = build_runtime(self)
            return self._local_runtime

    def recall(self) -> Recall:
        """The recall index, shared by every caller of this process (it locks itself)."""
        if self.runtime is not None:
            return self.runtime.recall()
        with self._lock:
            if self._recall is None:
                from ..memory.recall import Recall

                self._recall = Recall(
                    self.open_ledger(), self.home.embedder(), configured=self.home.embedder
                )
            return self._recall

    def outside_home(self, text: str) -> Path:
        """A path an operation may read or write for a caller: anywhere but the home, whose
        keys, token and databases no operation hands out or overwrites."""
        path = Path(text).expanduser().resolve()
        home = self.home.path.resolve()
        if path == home or home in path.parents:
            raise BadInput(f"{text} is inside the keel home; choose a place outside it")
        return path

    def ledger_description(self) -> str:
        """Where the ledger is — a shared one said loudly (what `keel up` prints)."""
        return self.home.describe_ledger()

    def timezone(self) -> str:
        """The operator's time zone (IANA name): how people are shown instants."""
        return self.home.timezone().key

    def verdict(self) -> Verdict:
        """What the governance file allows now, or why it may not be acted on."""
        ledger = self.ledger()  # opened first: a home from an older keel gets its default
        return self.governance.verdict(ledger.view)

    def governance_findings(self, view: object = None, now: object = None) -> list[Finding]:
        """The `governance` health check: an error finding while the file may not be
        acted on (a damaged ledger has its own, `integrity`)."""
        if self.home.integrity_problem():
            return []
        problem = self.verdict().problem
        if problem is None:
            return []
        return [Finding(GOVERNANCE, "file", f"keel is read-only: {problem}", "error")]

    def hold(self) -> str | None:
        """Why the scheduler may fire nothing now (keel is read-only), or None. A change in
        governance's verdict is recorded as its health finding as soon as it is seen."""
        problem = self.read_only()
        found = self.governance_findings()
        key = found[0].message if found else None
        if key != self._held:
            self._held = key
            with contextlib.suppress(KeelError), self.open_guarded() as ledger:
                record(ledger, found, [GOVERNANCE])
        return problem

    def read_only(self) -> str | None:
        """Why keel refuses writes now, or None: its ledger failed verification, or its
        governance file is missing, invalid or unsigned."""
        return self.home.integrity_problem() or self.verdict().problem

    def close(self) -> None:
        with self._lock:
            opened, self._opened = list(self._opened), weakref.WeakSet()
            recall, self._recall = self._recall, None
            runtime, self._local_runtime = self._local_runtime, None
        if runtime is not None:
            runtime.scheduler.pool.shutdown(wait=True)
        for ledger in opened:
            ledger.close()
        if recall is not None:
            recall.ledger.close()
            recall.close()
        self._local = threading.local()

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
