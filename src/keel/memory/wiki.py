"""The topic wiki: raw sources ingested once and never changed, articles compiled from them
whose claims cite those sources, and a lint that says where the wiki has drifted.

Everything is ledger facts, so every source, article and fix has an author and a history;
each wiki operation also writes a `wikilog` entity in the same transaction, which is the
wiki's own log of what was ingested, compiled and fixed.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import Any

from ..ledger import BadInput, NotFound, TxResult, View
from ..ledger.instants import format_instant
from . import links
from .memory import Memory, _strings
from .model import slugify

NO_TOPIC = "(none)"
_HEX = re.compile(r"^[0-9a-f]{8,64}$")
_LOOSE = re.compile(r"[\W_]+", re.UNICODE)
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
#: Where each kind of label lives; all of them take part in the near-duplicate check.
_LABELS = ("mem/tags", "source/topics", "article/topic")


def tag_key(tag: str) -> str:
    """What near-duplicate tags share: case folded, `_`/space/`-` unified, and a trailing
    plural 's' dropped ('Machine Learning', 'machine_learnings' -> 'machine-learning')."""
    words = [w for w in re.split(r"[\s_-]+", tag.casefold()) if w]
    if words and len(words[-1]) > 3 and words[-1].endswith("s") and words[-1][-2] != "s":
        words[-1] = words[-1][:-1]
    return "-".join(words)


def _loose(name: str) -> str:
    """A name with case, spacing and punctuation ignored, for spelling fixes."""
    return _LOOSE.sub("", name.casefold())


def source_id(digest: str) -> str:
    return f"source:{digest[:16]}"


def article_id(slug: str) -> str:
    return f"article:{slug}"


class Wiki:
    """The wiki surfaces (`source`, `article`) of one `Memory`."""

    def __init__(self, memory: Memory):
        self.memory = memory
        self.ledger = memory.ledger

    # -- writing -------------------------------------------------------------------------
    def _update(self, build, reason: str) -> TxResult | None:
        return self.ledger.update(build, reason, signer=self.memory.signer)

    @staticmethod
    def _log(op: str, target: str) -> list[dict]:
        return [
            {"op": "add", "e": "#wikilog", "a": "wikilog/op", "v": op},
            {"op": "add", "e": "#wikilog", "a": "wikilog/target", "v": target},
        ]

    def add_source(
        self,
        text: str,
        *,
        title: str | None = None,
        url: str | None = None,
        topics: Iterable[str] = (),
    ) -> dict[str, Any]:
        """Ingest a raw source. The same text twice is one source: the second time only
        adds topics it did not have yet."""
        text = Memory._text(text, "a source's text")
        topic_list = _strings(topics, "topics")
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        e, full = source_id(digest), f"sha256:{digest}"
        duplicate = False

        def build(view: View) -> list[dict]:
            nonlocal duplicate
            have = view.value(e, "source/hash")
            if have is not None and have != full:
                raise BadInput(f"{e} already holds {have}, whose first 16 hex digits clash")
            duplicate = have is not None
            known = view.value(e, "source/topics") or []
            ops = [
                {"op": "add", "e": e, "a": "source/topics", "v": t}
                for t in dict.fromkeys(topic_list)
                if t not in known
            ]
            if duplicate:
                return ops + self._log("topic", e) if ops else []
            ops += self.memory._item_ops(
                e, "source", text, title=title, source=url, at=self.memory.now()
            )
            ops.append({"op": "add", "e": e, "a": "source/hash", "v": full})
            return ops + self._log("ingest", e)

        res = self._update(build, f"wiki ingest {e}")
        return {"id": e, "hash": full, "duplicate": duplicate, "tx": res.tx if res else None}

    def _resolve_citation(self, view: View, prefix: str) -> str:
        """The one source whose hash starts with `prefix`."""
        p = prefix.strip().lower().removeprefix("sha256:")
        if not _HEX.match(p):
            raise BadInput(
                f"citation [[sources/{prefix}]] must give at least 8 hex digits of a source's hash"
            )
        if len(p) >= 16:
            ids = [source_id(p)]
        else:
            ids = [s for s in view.find("source/hash") if s.startswith(source_id(p))]
        found = [s for s in ids if (view.value(s, "source/hash") or "").startswith("sha256:" + p)]
        if len(found) != 1:
            what = "no source" if not found else f"{len(found)} sources; give more digits"
            raise BadInput(f"citation [[sources/{prefix}]] matches {what}")
        return found[0]

    def write_article(
        self,
        slug: str,
        body: str,
        *,
        title: str | None = None,
        topic: str | None = None,
        tags: Iterable[str] | None = None,
    ) -> dict[str, Any]:
        """Compile an article. Its `[[sources/<hash>]]` citations must each name one known
        source; `article/cites` becomes exactly those. Title, topic and tags left as None
        keep what the article had; the old body stays in history."""
        slug = slugify(Memory._text(slug, "an article's slug"))
        if not slug:
            raise BadInput("an article's slug needs at least one letter or digit")
        body = Memory._text(body, "an article's body")
        tag_list = None if tags is None else list(dict.fromkeys(_strings(tags, "tags")))
        e = article_id(slug)

        def build(view: View) -> list[dict]:
            cites = {self._resolve_citation(view, c) for c in links.citations(body)}
            current = view.get(e) or {}
            ops = []
            for a, v in (
                ("article/slug", slug),
                ("mem/surface", "article"),
                ("mem/text", body),
                ("mem/title", title or current.get("mem/title") or slug),
                ("article/topic", topic),
            ):
                if v is not None and current.get(a) != v:
                    ops.append({"op": "add", "e": e, "a": a, "v": v})
            ops += _set_many(e, "article/cites", current.get("article/cites", []), cites)
            if tag_list is not None:
                ops += _set_many(e, "mem/tags", current.get("mem/tags", []), tag_list)
            if not ops:
                return []
            ops.append({"op": "add", "e": e, "a": "mem/at", "v": self.memory.now()})
            return ops + self._log("compile", e)

        res = self._update(build, f"wiki compile {slug}")
        return {"id": e, "slug": slug, "tx": res.tx if res else None}

    # -- reading -------------------------------------------------------------------------
    def article(self, slug: str, as_of: Any = None) -> dict[str, Any]:
        view = self.memory.view(as_of)
        e = article_id(slugify(slug or ""))
        got = view.get(e)
        if not got or got.get("mem/surface") != "article":
            raise NotFound(f"there is no article {slug!r} at that time")
        return _article_json(view, e)

    def sources(self, topic: str | None = None) -> list[dict[str, Any]]:
        """Sources, newest first; with `topic`, those about it (near-duplicate spellings
        of the topic count)."""
        view = self.memory.view()
        found = [_source_json(view, s) for s in view.find("source/hash")]
        if topic is not None:
            found = [s for s in found if tag_key(topic) in {tag_key(t) for t in s["topics"]}]
        return sorted(found, key=lambda s: (s["at"] or "", s["id"]), reverse=True)

    def _articles(self, view: View) -> list[dict[str, Any]]:
        return [_article_json(view, e) for e in view.find("article/slug")]

    def index(self) -> list[dict[str, Any]]:
        """Articles grouped by topic; articles without one come last, under '(none)'."""
        groups: dict[str, list[dict]] = {}
        for a in self._articles(self.memory.view()):
            groups.setdefault(a["topic"] or NO_TOPIC, []).append(
                {"slug": a["slug"], "title": a["title"], "sources": len(a["cites"])}
            )
        order = sorted(groups, key=lambda t: (t == NO_TOPIC, t.casefold(), t))
        return [{"topic": t, "articles": sorted(groups[t], key=lambda x: x["slug"])} for t in order]

    def log(self, limit: int = 50) -> list[dict[str, Any]]:
        """The wiki's operations, newest first."""
        view = self.memory.view()
        out = []
        for e in view.find("wikilog/op"):
            first = view.history(e, "wikilog/op")[0]
            out.append(
                {
                    "op": view.value(e, "wikilog/op"),
                    "target": view.value(e, "wikilog/target"),
                    "tx": first["tx"],
                    "time": first["tx_time"],
                    "author": first["author"],
                }
            )
        out.sort(key=lambda x: x["tx"], reverse=True)
        return out[:limit]

    # -- lint and fix --------------------------------------------------------------------
    def lint(self) -> list[dict[str, Any]]:
        """Where the wiki has drifted: broken links, orphan sources, stale articles,
        near-duplicate tags and uncited claims. Only some of it `fix()` can repair."""
        view = self.memory.view()
        articles = self._articles(view)
        found: list[dict] = []
        for a in articles:
            for target, fixed in self._broken_links(view, a["body"]):
                detail = f"[[{target}]] links to nothing" + (
                    f"; did you mean [[{fixed}]]?" if fixed else ""
                )
                found.append(_finding("broken-link", a["slug"], detail, fixed is not None))
        for s in view.find("source/hash"):
            if not any(attr == "article/cites" for _e, attr in view.refs(s)):
                found.append(_finding("orphan-source", s, "no article cites this source", False))
        for a in articles:
            for s in self._newer_sources(view, a):
                detail = f"{s} on topic {a['topic']!r} arrived after the article was compiled"
                found.append(_finding("stale-article", a["slug"], detail, False))
        for key, spellings in sorted(self._tag_groups(view).items()):
            canon = _canonical(spellings)
            fixable = any(sp != canon for sp in spellings)
            detail = f"{', '.join(sorted(spellings))} are one tag; keep {canon!r}"
            found.append(_finding("near-duplicate-tags", key, detail, fixable))
        for a in articles:
            for claim in uncited_claims(a["body"]):
                found.append(_finding("uncited-claim", a["slug"], _short(claim), False))
        return found

    def fix(self) -> list[dict[str, Any]]:
        """Apply the mechanical fixes only (tag spellings, link spellings), one transaction
        each; what needs judgement (orphans, stale articles, uncited claims) is left."""
        done: list[dict] = []
        for key in sorted(self._tag_groups(self.memory.view())):
            done += self._fix_tags(key)
        for a in self._articles(self.memory.view()):
            for target, fixed in self._broken_links(self.memory.view(), a["body"]):
                if fixed is not None:
                    done += self._fix_link(a["slug"], target, fixed)
        return done

    def _spellings(self, view: View) -> dict[str, list[str]]:
        """What links may name, keyed by loose form: entity names and article slugs bare,
        article slugs also as `wiki/<slug>`."""
        names: dict[str, list[str]] = {}
        for e in view.find("entity/slug"):
            name = view.value(e, "entity/name") or view.value(e, "entity/slug")
            names.setdefault(_loose(name), []).append(name)
        for e in view.find("article/slug"):
            slug = view.value(e, "article/slug")
            names.setdefault(_loose(slug), []).append(slug)
            names.setdefault("wiki/" + _loose(slug), []).append(f"wiki/{slug}")
        return names

    def _broken_links(self, view: View, body: str) -> list[tuple[str, str | None]]:
        """(target, the spelling that would fix it, or None) for each link that resolves
        to nothing."""
        out: list[tuple[str, str | None]] = []
        names: dict[str, list[str]] | None = None
        for target in links.targets(body):
            if target.startswith("sources/"):
                try:
                    self._resolve_citation(view, target.removeprefix("sources/"))
                except BadInput:
                    out.append((target, None))
                continue
            if target.startswith(("decisions/", "canon/")):
                continue
            wiki = target.startswith("wiki/")
            name = target.removeprefix("wiki/").split("/")[-1]
            slug = slugify(name)
            if slug and view.value(article_id(slug), "article/slug") is not None:
                continue
            if slug and not wiki and view.value(f"entity:{slug}", "entity/slug") is not None:
                continue
            names = names if names is not None else self._spellings(view)
            same = set(names.get(("wiki/" if wiki else "") + _loose(name), []))
            out.append((target, same.pop() if len(same) == 1 else None))
        return out

    def _newer_sources(self, view: View, article: dict) -> list[str]:
        """Sources given the article's topic in a later transaction than its compile."""
        if not article["topic"]:
            return []
        key = tag_key(article["topic"])
        compiled = max(h["tx"] for h in view.history(article["id"], "mem/at"))
        newer = []
        for s in view.find("source/hash"):
            for h in view.history(s, "source/topics"):
                if h["op"] == "add" and tag_key(h["v"]) == key and h["tx"] > compiled:
                    newer.append(s)
                    break
        return newer

    def _tag_groups(self, view: View) -> dict[str, dict[str, list[tuple[str, str]]]]:
        """Keys with more than one spelling: key -> spelling -> [(item, attribute)]."""
        groups: dict[str, dict[str, list[tuple[str, str]]]] = {}
        items = [*view.find("source/hash"), *view.find("article/slug")]
        for e in items:
            got = view.get(e) or {}
            for a in _LABELS:
                for label in _as_list(got.get(a)):
                    groups.setdefault(tag_key(label), {}).setdefault(label, []).append((e, a))
        return {k: g for k, g in groups.items() if len(g) > 1}

    def _fix_tags(self, key: str) -> list[dict]:
        changed: list[str] = []

        def build(view: View) -> list[dict]:
            changed.clear()
            spellings = self._tag_groups(view).get(key)
            if not spellings:
                return []
            canon = _canonical(spellings)
            ops: list[dict] = []
            for spelling, where in spellings.items():
                for e, a in where:
                    if spelling == canon:
                        continue
                    if a in ("mem/tags", "source/topics"):  # labels, retractable on sources
                        ops.append({"op": "retract", "e": e, "a": a, "v": spelling})
                    add = {"op": "add", "e": e, "a": a, "v": canon}
                    if add not in ops and canon not in _as_list(view.value(e, a)):
                        ops.append(add)
                    changed.append(f"{e} {spelling!r}")
            changed.insert(0, canon)
            return ops + self._log("fix", f"tag {canon}") if ops else []

        if self._update(build, f"wiki fix tags {key}") is None:
            return []
        canon, items = changed[0], changed[1:]
        return [_done("near-duplicate-tags", key, f"{', '.join(items)} -> {canon!r}")]

    def _fix_link(self, slug: str, target: str, fixed: str) -> list[dict]:
        e = article_id(slug)

        def build(view: View) -> list[dict]:
            body = view.value(e, "mem/text") or ""
            new = _rename_link(body, target, fixed)
            if new == body:
                return []
            return [{"op": "add", "e": e, "a": "mem/text", "v": new}, *self._log("fix", e)]

        if self._update(build, f"wiki fix link [[{target}]] in {slug}") is None:
            return []
        return [_done("broken-link", slug, f"[[{target}]] -> [[{fixed}]]")]


# -- pure helpers ----------------------------------------------------------------------------
def uncited_claims(body: str) -> list[str]:
    """Prose paragraphs and list items with no `[[sources/...]]` citation. Headings, code,
    blank lines and lines that are only links are not claims."""
    blocks: list[str] = []
    current: list[str] = []
    fenced = False

    def close() -> None:
        if current:
            blocks.append(" ".join(current))
            current.clear()

    for line in body.splitlines():
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")):
            close()
            fenced = not fenced
        elif fenced:
            continue
        elif not stripped or stripped.startswith("#"):
            close()
        elif _LIST_ITEM.match(line):
            close()
            current.append(_LIST_ITEM.sub("", line).strip())
        else:
            current.append(stripped)
    close()
    return [b for b in blocks if _is_prose(b) and not links.citations(b)]


def _is_prose(block: str) -> bool:
    return bool(re.sub(r"[\W_]+", "", links.WIKI_LINK.sub("", block)))


def _rename_link(body: str, target: str, fixed: str) -> str:
    def swap(m: re.Match) -> str:
        if m.group(1).strip() != target:
            return m.group(0)
        return m.group(0)[: m.start(1) - m.start()] + fixed + m.group(0)[m.end(1) - m.start() :]

    return links.WIKI_LINK.sub(swap, body)


def _set_many(e: str, a: str, have: list, want: Iterable) -> list[dict]:
    want = list(want)
    ops = [{"op": "retract", "e": e, "a": a, "v": v} for v in have if v not in want]
    return ops + [{"op": "add", "e": e, "a": a, "v": v} for v in want if v not in have]


def _canonical(spellings: dict[str, list]) -> str:
    """The most used spelling; ties go to the alphabetically first."""
    return min(spellings, key=lambda s: (-len(spellings[s]), s))


def _as_list(v: Any) -> list:
    return v if isinstance(v, list) else [] if v is None else [v]


def _article_json(view: View, e: str) -> dict[str, Any]:
    got = view.get(e) or {}
    history = view.history(e, "mem/text")
    return {
        "id": e,
        "slug": got.get("article/slug"),
        "title": got.get("mem/title"),
        "topic": got.get("article/topic"),
        "tags": sorted(got.get("mem/tags", [])),
        "body": got.get("mem/text"),
        "cites": sorted(got.get("article/cites", [])),
        "at": format_instant(got["mem/at"]) if "mem/at" in got else None,
        "tx": max((h["tx"] for h in history), default=None),
    }


def _source_json(view: View, e: str) -> dict[str, Any]:
    got = view.get(e) or {}
    return {
        "id": e,
        "hash": got.get("source/hash"),
        "title": got.get("mem/title"),
        "url": got.get("mem/source"),
        "topics": sorted(got.get("source/topics", [])),
        "text": got.get("mem/text"),
        "at": format_instant(got["mem/at"]) if "mem/at" in got else None,
    }


def _finding(kind: str, target: str, detail: str, fixable: bool) -> dict[str, Any]:
    return {"kind": kind, "target": target, "detail": detail, "fixable": fixable}


def _done(kind: str, target: str, detail: str) -> dict[str, Any]:
    return {"kind": kind, "target": target, "detail": detail}


def _short(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
