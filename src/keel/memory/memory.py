"""The memory surfaces over one ledger: what each write looks like as datoms, and the
compiled reads (an entity's current view, its timeline, a surface's items).

Every write is one signed transaction, so every memory has an author, a history and a
valid-time interval. Rules that refuse writes live in `rules.py` and run as a guard.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC
from typing import Any

from ..ledger import BadInput, Conflict, Ledger, NotFound, Signer, TxResult, View
from ..ledger.encoding import ASSERT
from ..ledger.instants import (
    FOREVER,
    SINCE_ALWAYS,
    format_instant,
    from_us,
    parse_duration,
    parse_instant,
)
from . import links, rules
from .model import DECLARATIONS, ENTITY_KINDS, FACT_KEY, SURFACES, fact_attr, slugify

DEFAULT_TTL = "24h"
#: An entity's identity (slug, name, kind, summary) holds over all of valid time: Alice
#: existed before keel heard of her. Facts about her carry their own intervals.
ALWAYS = {"valid_from": SINCE_ALWAYS}
US = 1_000_000

#: Short names for attributes in the JSON form of an item.
_SHORT = {
    "mem/surface": "surface",
    "mem/text": "text",
    "mem/title": "title",
    "mem/source": "source",
    "mem/tags": "tags",
    "mem/at": "at",
    "mem/scope": "scope",
}


def ensure_schema(ledger: Ledger, signer: Signer | None = None) -> None:
    """Declare the memory attributes if this ledger lacks any, and install the rules.

    `keel init` declares them for a home; this is for a bare ledger (tests, embedders)."""
    if any(d["attribute"] not in ledger.schema for d in DECLARATIONS) or any(
        ledger.schema[d["attribute"]].doc != d["doc"] for d in DECLARATIONS
    ):
        ledger.declare(DECLARATIONS, signer=signer)
    rules.install(ledger)


def entity_id(slug: str) -> str:
    return f"entity:{slug}"


def item_json(view: View, e: str) -> dict[str, Any] | None:
    """An item as plain JSON: short keys for `mem/*`, `ns/attr` for the rest, facts apart."""
    raw = view.get_json(e)
    if raw is None:
        return None
    out: dict[str, Any] = {"id": e}
    facts: dict[str, Any] = {}
    for a, v in raw.items():
        if a == "db/id":
            continue
        if a.startswith("fact/"):
            facts[a.removeprefix("fact/")] = v
        else:
            out[_SHORT.get(a, a)] = v
    if facts:
        out["facts"] = facts
    return out


def _at(item: dict[str, Any]) -> str:
    """An item's time to sort by: a forgotten one (its marker) sorts as having none."""
    at = item.get("at")
    return at if isinstance(at, str) else ""


class Memory:
    """Memory surfaces over `ledger`. Pass `signer` to write as an identity other than the
    ledger's own (each MCP client writes as itself)."""

    def __init__(self, ledger: Ledger, signer: Signer | None = None):
        self.ledger = ledger
        self.signer = signer
        rules.install(ledger)  # a guard, not a write: constructing memory writes nothing

    # -- helpers -------------------------------------------------------------------------
    def _instant(self, value: Any, what: str, default: int | None = None) -> int:
        if value is None or value == "":
            if default is None:
                raise BadInput(f"{what} is required")
            return default
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if not isinstance(value, str):
            raise BadInput(f"{what} must be an ISO 8601 instant, got {value!r}")
        return parse_instant(value, self.ledger.default_tz)

    def now(self) -> int:
        return self.ledger.clock()

    def view(self, as_of: Any = None, valid_at: Any = None) -> View:
        return self.ledger.view(as_of=as_of, valid_at=valid_at)

    def _commit(self, ops: list[dict], reason: str) -> TxResult:
        return self.ledger.transact(ops, reason=reason, signer=self.signer)

    @staticmethod
    def _text(text: Any, what: str = "text") -> str:
        if not isinstance(text, str) or not text.strip():
            raise BadInput(f"{what} must be a non-empty string")
        return text

    def _item_ops(
        self,
        e: str,
        surface: str,
        text: str | None,
        *,
        title: str | None = None,
        source: str | None = None,
        tags: Iterable[str] = (),
        at: int | None = None,
        valid_from: int | None = None,
        valid_to: int | None = None,
    ) -> list[dict]:
        span: dict[str, Any] = {}
        if valid_from is not None:
            span["valid_from"] = valid_from
        if valid_to is not None:
            span["valid_to"] = valid_to
        ops = [{"op": "add", "e": e, "a": "mem/surface", "v": surface, **span}]
        for a, v in (
            ("mem/text", text),
            ("mem/title", title),
            ("mem/source", source),
            ("mem/at", at),
        ):
            if v is not None and v != "":
                ops.append({"op": "add", "e": e, "a": a, "v": v, **span})
        for tag in _strings(tags, "tags"):
            ops.append({"op": "add", "e": e, "a": "mem/tags", "v": tag, **span})
        return ops

    def item(self, e: str, as_of: Any = None, valid_at: Any = None) -> dict[str, Any]:
        found = item_json(self.view(as_of, valid_at), e)
        if found is None:
            raise NotFound(f"there is no memory item {e!r} at that time")
        return found

    def items(
        self, surface: str, *, limit: int = 50, as_of: Any = None, valid_at: Any = None
    ) -> list[dict[str, Any]]:
        """Items of one surface, newest first by `mem/at`."""
        if surface not in SURFACES:
            raise BadInput(f"{surface!r} is not a memory surface ({', '.join(SURFACES)})")
        view = self.view(as_of, valid_at)
        found = [item_json(view, e) for e in view.find("mem/surface", surface)]
        found = [f for f in found if f is not None]
        found.sort(key=lambda i: (_at(i), i["id"]), reverse=True)
        return found[:limit]

    # -- working memory --------------------------------------------------------------------
    def remember(
        self,
        text: str,
        *,
        scope: str,
        ttl: str | float | None = None,
        expires: Any = None,
        title: str | None = None,
        tags: Iterable[str] = (),
        source: str | None = None,
    ) -> dict[str, Any]:
        """Working memory for an agent or run; it leaves the current view when it expires
        and stays in history."""
        if not isinstance(scope, str) or not scope.strip():
            raise BadInput("working memory needs a scope (an agent or a run)")
        now = self.now()
        if expires is not None and ttl is not None:
            raise BadInput("give an expiry or a ttl, not both")
        if expires is not None:
            until = self._instant(expires, "expires")
        else:
            until = now + int(parse_duration(ttl or DEFAULT_TTL) * US)
        if until <= now:
            raise BadInput("working memory must expire in the future")
        ops = self._item_ops(
            "#w",
            "working",
            self._text(text),
            title=title,
            source=source,
            tags=tags,
            at=now,
            valid_from=now,
            valid_to=until,
        )
        ops.append(
            {
                "op": "add",
                "e": "#w",
                "a": "mem/scope",
                "v": scope,
                "valid_from": now,
                "valid_to": until,
            }
        )
        res = self._commit(ops, f"remember for {scope}")
        return {"id": res.tempids["#w"], "tx": res.tx, "expires": format_instant(until)}

    def working(self, scope: str | None = None) -> list[dict[str, Any]]:
        view = self.view()
        ids = view.find("mem/scope", scope) if scope else view.find("mem/surface", "working")
        return [i for e in ids if (i := item_json(view, e)) and i.get("surface") == "working"]

    # -- entities --------------------------------------------------------------------------
    def kinds(self) -> list[str]:
        view = self.view()
        extra = [view.value(e, "entity-kind/name") for e in view.find("entity-kind/name")]
        return [*ENTITY_KINDS, *sorted(k for k in extra if k)]

    def add_kind(self, name: str) -> TxResult | None:
        kind = slugify(self._text(name, "a kind"))
        if kind in self.kinds():
            return None
        return self._commit(
            [{"op": "add", "e": f"kind:{kind}", "a": "entity-kind/name", "v": kind}],
            f"add entity kind {kind}",
        )

    def resolve(self, ref: str, view: View | None = None) -> str:
        """An entity id from an id, a slug or a name."""
        if not isinstance(ref, str) or not ref.strip():
            raise BadInput("name an entity")
        view = view or self.view()
        for e in (ref, entity_id(ref), entity_id(slugify(ref))):
            if view.value(e, "entity/slug") is not None:
                return e
        by_alias = view.find("entity/aliases", ref.strip(), limit=2)
        if len(by_alias) == 1:
            return by_alias[0]
        raise NotFound(f"there is no entity {ref!r}")

    def upsert_entity(
        self,
        name: str,
        kind: str | None = None,
        *,
        slug: str | None = None,
        aliases: Iterable[str] = (),
        summary: str | None = None,
        facts: Mapping[str, Any] | None = None,
        valid_from: Any = None,
        source: str | None = None,
        frontmatter: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create an entity or add to it. Facts given here are observations too."""
        name = self._text(name, "an entity's name").strip()
        slug = slugify(slug or name)
        if not slug:
            raise BadInput(f"{name!r} makes no usable slug")
        if kind is not None and kind not in self.kinds():
            raise BadInput(f"{kind!r} is not an entity kind ({', '.join(self.kinds())})")
        e = entity_id(slug)
        alias_list = _strings(aliases, "aliases")
        facts = dict(facts or {})
        declare = [fact_declaration(key) for key in facts]
        since = self._instant(valid_from, "valid_from", self.now())

        def build(view: View) -> list[dict]:
            ops = self._entity_ops(view, e, slug, name, kind, alias_list, summary, source)
            for key, value in facts.items():
                ops += _fact_ops(view, e, key, _fact_value(key, value), since, FOREVER)
            ops += self._link_ops(view, e, e, summary or "", frontmatter, since)
            return ops

        res = self.ledger.update(build, f"entity {slug}", signer=self.signer, declare=declare)
        return {"id": e, "slug": slug, "tx": res.tx if res else None}

    @staticmethod
    def _entity_ops(
        view: View,
        e: str,
        slug: str,
        name: str,
        kind: str | None,
        aliases: Iterable[str] = (),
        summary: str | None = None,
        source: str | None = None,
    ) -> list[dict]:
        """What makes `e` the entity named `name`, leaving out what it already says."""
        current = view.get(e) or {}
        ops = []
        for a, v in (
            ("entity/slug", slug),
            ("entity/name", name),
            ("entity/kind", kind),
            ("mem/surface", "entity"),
            ("mem/text", summary),
            ("mem/source", source),
        ):
            if v is not None and current.get(a) != v:
                ops.append({"op": "add", "e": e, "a": a, "v": v, **ALWAYS})
        for alias in aliases:
            if alias not in current.get("entity/aliases", []):
                ops.append({"op": "add", "e": e, "a": "entity/aliases", "v": alias, **ALWAYS})
        return ops

    def _link_ops(
        self,
        view: View,
        origin: str,
        source_entity: str,
        text: str,
        frontmatter: Mapping[str, Any] | None,
        since: int,
    ) -> list[dict]:
        """Links from `[[...]]` in text and frontmatter; missing targets become stubs."""
        ops: list[dict] = []
        for kind, slug in links.extract(text, frontmatter):
            target = entity_id(slug)
            if target == source_entity:
                continue
            if view.value(target, "entity/slug") is None and not any(o["e"] == target for o in ops):
                ops += [
                    {"op": "add", "e": target, "a": "entity/slug", "v": slug, **ALWAYS},
                    {
                        "op": "add",
                        "e": target,
                        "a": "entity/name",
                        "v": _name_of(slug, text),
                        **ALWAYS,
                    },
                    {"op": "add", "e": target, "a": "mem/surface", "v": "entity", **ALWAYS},
                ]
            link = f"link:{source_entity}:{kind}:{target}"
            if view.value(link, "link/type") is None:
                ops += [
                    {
                        "op": "add",
                        "e": link,
                        "a": "link/from",
                        "v": source_entity,
                        "valid_from": since,
                    },
                    {"op": "add", "e": link, "a": "link/to", "v": target, "valid_from": since},
                    {"op": "add", "e": link, "a": "link/type", "v": kind, "valid_from": since},
                    {"op": "add", "e": link, "a": "link/origin", "v": origin, "valid_from": since},
                ]
        return ops

    def observe(
        self,
        entity: str,
        text: str,
        *,
        at: Any = None,
        source: str | None = None,
        fact: str | None = None,
        value: Any = None,
        valid_to: Any = None,
        kind: str | None = None,
    ) -> dict[str, Any]:
        """A dated, sourced observation on an entity's timeline. With `fact`/`value` it
        also sets that fact from `at`, closing (never deleting) what it contradicts."""
        text = self._text(text, "an observation")
        when = self._instant(at, "at", self.now())
        until = self._instant(valid_to, "valid_to", FOREVER)
        if until <= when:
            raise BadInput("valid_to must be after the observation's time")
        if (fact is None) != (value is None):
            raise BadInput("give both a fact and its value, or neither")
        declare = []
        if fact is not None:
            declare.append(fact_declaration(fact))
            value = _fact_value(fact, value)
        if kind is not None and kind not in self.kinds():
            raise BadInput(f"{kind!r} is not an entity kind ({', '.join(self.kinds())})")
        found: dict[str, str] = {}

        def build(view: View) -> list[dict]:
            # One transaction: a new entity, its observation and the fact it sets stand or
            # fall together.
            ops: list[dict] = []
            try:
                e = self.resolve(entity, view)
            except NotFound:
                name = self._text(entity, "an entity's name").strip()
                slug = slugify(name)
                if not slug:
                    raise BadInput(f"{name!r} makes no usable slug") from None
                e = entity_id(slug)
                ops += self._entity_ops(view, e, slug, name, kind)
            found["entity"] = e
            ops += self._item_ops(
                "#obs", "observation", text, source=source, at=when, valid_from=when
            )
            ops.append({"op": "add", "e": "#obs", "a": "obs/entity", "v": e, "valid_from": when})
            if fact is not None:
                ops += [
                    {"op": "add", "e": "#obs", "a": "obs/fact", "v": fact, "valid_from": when},
                    {"op": "add", "e": "#obs", "a": "obs/value", "v": value, "valid_from": when},
                ]
                ops += _fact_ops(view, e, fact, value, when, until)
            ops += self._link_ops(view, "#obs", e, text, None, when)
            return ops

        res = self.ledger.update(build, f"observe {entity}", signer=self.signer, declare=declare)
        assert res is not None
        return {"id": res.tempids["#obs"], "entity": found["entity"], "tx": res.tx}

    def entity(self, ref: str, as_of: Any = None, valid_at: Any = None) -> dict[str, Any]:
        """The compiled view of an entity at a time: name, kind, facts, links."""
        view = self.view(as_of, valid_at)
        e = self.resolve(ref, view)
        out = item_json(view, e) or {"id": e}
        out["links"] = self._links(view, e)
        out["observations"] = len(view.find("obs/entity", e))
        out["valid_at"] = format_instant(view.valid_at)
        return out

    def _links(self, view: View, e: str) -> list[dict]:
        found = []
        for link, attr in view.refs(e):
            if attr not in ("link/from", "link/to"):
                continue
            got = view.get(link) or {}
            other = got.get("link/to") if attr == "link/from" else got.get("link/from")
            found.append(
                {
                    "type": got.get("link/type"),
                    "direction": "out" if attr == "link/from" else "in",
                    "entity": other,
                }
            )
        return sorted(found, key=lambda x: (x["direction"], x["type"] or "", x["entity"] or ""))

    def timeline(self, ref: str, as_of: Any = None) -> list[dict[str, Any]]:
        """Observations, oldest first, then how each fact changed over valid time."""
        view = self.ledger.view(as_of=as_of, valid_at=FOREVER - 1)
        e = self.resolve(ref, view)
        events: list[dict[str, Any]] = []
        for obs in view.find("obs/entity", e):
            got = view.get(obs) or {}
            history = view.history(obs, "mem/surface")
            events.append(
                {
                    "type": "observation",
                    "id": obs,
                    "at": format_instant(got.get("mem/at", 0)),
                    "text": got.get("mem/text"),
                    "source": got.get("mem/source"),
                    "fact": got.get("obs/fact"),
                    "value": got.get("obs/value"),
                    "author": history[0]["author"] if history else None,
                    "tx": history[0]["tx"] if history else None,
                }
            )
        for a in sorted((view.get(e) or {}).keys() | self._fact_attrs(view, e)):
            if not a.startswith("fact/"):
                continue
            for v, vf, vt in view.intervals(e, a):
                events.append(
                    {
                        "type": "fact",
                        "fact": a.removeprefix("fact/"),
                        "value": v,
                        "valid_from": format_instant(vf),
                        "valid_to": format_instant(vt),
                        "at": format_instant(vf),
                    }
                )
        events.sort(key=lambda ev: (ev["at"] or "", ev["type"]))
        return events

    def _fact_attrs(self, view: View, e: str) -> set[str]:
        return {h["a"] for h in view.history(e) if h["a"].startswith("fact/")}

    # -- decisions, canon, episodes, capture, daybook -------------------------------------
    def log_decision(
        self,
        title: str,
        why: str,
        *,
        alternatives: Iterable[str] = (),
        evidence: Iterable[str] = (),
        by: str | None = None,
        at: Any = None,
        supersedes: str | None = None,
        tags: Iterable[str] = (),
    ) -> dict[str, Any]:
        when = self._instant(at, "at", self.now())
        ops = self._item_ops(
            "#d",
            "decision",
            None,
            title=self._text(title, "a decision"),
            tags=tags,
            at=when,
            valid_from=when,
        )
        ops.append(
            {
                "op": "add",
                "e": "#d",
                "a": "decision/why",
                "v": self._text(why, "why"),
                "valid_from": when,
            }
        )
        ops.append(
            {
                "op": "add",
                "e": "#d",
                "a": "decision/by",
                "v": by or (self.signer or self.ledger.signer).name,
            }
        )
        for alt in _strings(alternatives, "alternatives"):
            ops.append({"op": "add", "e": "#d", "a": "decision/alternatives", "v": alt})
        for ev in _strings(evidence, "evidence"):
            ops.append({"op": "add", "e": "#d", "a": "decision/evidence", "v": ev})
        if supersedes:
            if self.view().value(supersedes, "mem/surface") != "decision":
                raise NotFound(f"there is no decision {supersedes!r} to supersede")
            ops.append({"op": "add", "e": "#d", "a": "decision/supersedes", "v": supersedes})
        for op in ops:
            op.setdefault("valid_from", when)
        res = self._commit(ops, f"decision: {title[:60]}")
        return {"id": res.tempids["#d"], "tx": res.tx}

    def write_canon(self, name: str, body: str, title: str | None = None) -> dict[str, Any]:
        slug = slugify(self._text(name, "a canon name"))
        e = f"canon:{slug}"
        body = self._text(body, "canon text")

        def build(view: View) -> list[dict]:
            current = view.get(e) or {}
            ops = []
            for a, v in (
                ("canon/name", slug),
                ("mem/surface", "canon"),
                ("mem/text", body),
                ("mem/title", title or name),
            ):
                if current.get(a) != v:
                    ops.append({"op": "add", "e": e, "a": a, "v": v})
            return ops

        res = self.ledger.update(build, f"canon {slug}", signer=self.signer)
        return {"id": e, "tx": res.tx if res else None}

    def canon(self) -> list[dict[str, Any]]:
        return self.items("canon", limit=10_000)

    def add_episode(
        self,
        text: str,
        *,
        agent: str,
        title: str | None = None,
        session: str | None = None,
        at: Any = None,
        source: str | None = None,
    ) -> dict[str, Any]:
        """A transcript, valid from when the session happened. With a `session` id,
        recording the same session again replaces its text (the old text stays in history)."""
        when = self._instant(at, "at", self.now())
        e = f"episode:{slugify(session)}" if session else "#ep"
        ops = self._item_ops(
            e,
            "episode",
            self._text(text, "a transcript"),
            title=title,
            source=source,
            at=when,
            valid_from=when,
        )
        ops.append({"op": "add", "e": e, "a": "episode/agent", "v": self._text(agent, "agent")})
        if session:
            ops.append({"op": "add", "e": e, "a": "episode/session", "v": session})
        for op in ops:
            op.setdefault("valid_from", when)

        def build(view: View) -> list[dict]:
            recorded = view.value(e, "episode/agent") if session else None
            if recorded is not None and recorded != agent:
                raise Conflict(
                    f"session {session!r} was recorded by {recorded!r}; {agent!r} cannot "
                    "replace it (give the episode a session id of its own)"
                )
            return ops

        res = self.ledger.update(build, f"episode from {agent}", signer=self.signer)
        assert res is not None
        return {"id": res.tempids.get("#ep", e), "tx": res.tx}

    def capture(
        self, text: str, source: str | None = None, tags: Iterable[str] = ()
    ) -> dict[str, Any]:
        ops = self._item_ops(
            "#c", "capture", self._text(text), source=source, tags=tags, at=self.now()
        )
        res = self._commit(ops, "capture")
        return {"id": res.tempids["#c"], "tx": res.tx}

    def daybook(self, text: str, at: Any = None) -> dict[str, Any]:
        when = self._instant(at, "at", self.now())
        day = from_us(when).astimezone(self.ledger.default_tz or UTC).date().isoformat()
        ops = self._item_ops("#day", "daybook", self._text(text), at=when, valid_from=when)
        ops.append({"op": "add", "e": "#day", "a": "daybook/day", "v": day})
        for op in ops:
            op.setdefault("valid_from", when)
        res = self._commit(ops, f"daybook {day}")
        return {"id": res.tempids["#day"], "day": day, "tx": res.tx}

    def day(self, day: str) -> list[dict[str, Any]]:
        view = self.view()
        found = [i for e in view.find("daybook/day", day) if (i := item_json(view, e))]
        return sorted(found, key=_at)


def _strings(values: Iterable[str], what: str) -> list[str]:
    if isinstance(values, str):
        values = [values]
    out = []
    for v in values or ():
        if not isinstance(v, str) or not v.strip():
            raise BadInput(f"each of {what} must be a non-empty string")
        out.append(v.strip())
    return out


def fact_declaration(key: str) -> dict:
    """The attribute a fact key is stored under, declared with the write that first uses it."""
    if not isinstance(key, str) or not FACT_KEY.match(key):
        raise BadInput(f"fact key {key!r} must be lower snake case, like lives_in")
    return {
        "attribute": fact_attr(key),
        "type": "string",
        "fulltext": True,
        "doc": f"entity fact: {key}",
    }


def _fact_value(key: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise BadInput(f"fact {key} takes a text or number value, got {value!r}")
    text = str(value).strip()
    if not text:
        raise BadInput(f"fact {key} needs a value")
    return text


def _fact_ops(view: View, e: str, key: str, value: str, since: int, until: int) -> list[dict]:
    """Set `key` to `value` over [since, until). Without an explicit end, the value holds
    until the next change already known; what it contradicts is closed by a retraction
    over the overlap, so the old value stays true before and after it."""
    attr = fact_attr(key)
    segments = view.intervals(e, attr) if attr in view.ledger.schema else []
    if until == FOREVER:
        # The next observation's start, not the next segment's: two observations of the
        # same value make one segment, and a value slipped in between must end at the
        # second one.
        rows = view.ledger.store.entity_datoms(e, view.segments, attr)
        later = [r[5] for r in rows if r[4] == ASSERT and r[5] > since]
        until = min(later) if later else FOREVER
    # Always asserted, even when the value is unchanged: each observation is a start
    # point that a later back-dated observation must stop at.
    ops = [{"op": "add", "e": e, "a": attr, "v": value, "valid_from": since, "valid_to": until}]
    for v, vf, vt in segments:
        lo, hi = max(vf, since), min(vt, until)
        if v != value and lo < hi:
            ops.append(
                {"op": "retract", "e": e, "a": attr, "v": v, "valid_from": lo, "valid_to": hi}
            )
    return ops


def _name_of(slug: str, text: str) -> str:
    for target in links.entity_targets(text):
        if slugify(target.split("/")[-1]) == slug:
            return target.split("/")[-1].strip()
    return slug
