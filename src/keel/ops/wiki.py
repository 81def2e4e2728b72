"""Topic wiki operations: immutable sources, articles that cite them, the index, the log,
and the lint with its mechanical fixes. Sources and articles are memory surfaces other than
canon, so writing them needs `memory.write`."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from ..memory.wiki import Wiki
from .call import Call
from .models import AsOf, Input, Limit, NoArguments, OpenOutput, Output, SlugWritten
from .registry import operation

Slug = Annotated[str, Field(min_length=1, max_length=200, description="An article's handle.")]
Labels = list[Annotated[str, Field(max_length=200)]]


def _wiki(call: Call) -> Wiki:
    return Wiki(call.memory)


class SourceIn(Input):
    text: Annotated[str, Field(min_length=1, description="The full text; never changed later.")]
    title: Annotated[str | None, Field(max_length=1000)] = None
    url: Annotated[str | None, Field(max_length=4096, description="Where it came from.")] = None
    topics: Labels = Field(default_factory=list, description="Topics it is about.")


class SourceAdded(Output):
    id: str
    hash: str = Field(description="sha256:<hex>; cite it as [[sources/<8+ hex digits>]].")
    duplicate: bool
    tx: int | None


@operation(
    "wiki.source.add", capability="memory.write", writes=True, resources={"surface": ["source"]}
)
def source_add(call: Call, p: SourceIn) -> SourceAdded:
    """Ingest a raw source. The same text twice is one source (the second time only adds
    topics it did not have)."""
    return SourceAdded.model_validate(_wiki(call).add_source(**p.model_dump()))


class SourcesIn(Input):
    topic: Annotated[str | None, Field(max_length=200)] = None


class Source(Output):
    id: str
    hash: str | None
    title: str | None
    url: str | None
    topics: list[str]
    text: str | None
    at: str | None


@operation("wiki.sources", capability="memory.read", writes=False)
def sources(call: Call, p: SourcesIn) -> list[Source]:
    """Sources, newest first; with a topic, those about it (near-duplicate spellings count)."""
    return [Source.model_validate(s) for s in _wiki(call).sources(p.topic)]


class ArticleIn(Input):
    slug: Slug
    body: Annotated[
        str, Field(min_length=1, description="Markdown; cite sources as [[sources/<hash>]].")
    ]
    title: Annotated[str | None, Field(max_length=1000)] = None
    topic: Annotated[str | None, Field(max_length=200)] = None
    tags: Labels | None = Field(None, description="Replaces the tags; leave out to keep them.")


@operation(
    "wiki.article.write", capability="memory.write", writes=True, resources={"surface": ["article"]}
)
def article_write(call: Call, p: ArticleIn) -> SlugWritten:
    """Compile an article. Its [[sources/<hash>]] citations must each name one known source;
    the old body stays in history."""
    fields = p.model_dump()
    slug, body = fields.pop("slug"), fields.pop("body")
    return SlugWritten.model_validate(_wiki(call).write_article(slug, body, **fields))


class ArticleShowIn(Input):
    slug: Slug
    as_of: AsOf = None


class Article(Output):
    id: str
    slug: str | None
    title: str | None
    topic: str | None
    tags: list[str]
    body: str | None
    cites: list[str]
    at: str | None
    tx: int | None


@operation("wiki.article.show", capability="memory.read", writes=False)
def article_show(call: Call, p: ArticleShowIn) -> Article:
    """One article, as it stands or as of a transaction."""
    return Article.model_validate(_wiki(call).article(p.slug, as_of=p.as_of))


class IndexEntry(Output):
    slug: str
    title: str | None
    sources: int


class TopicGroup(Output):
    topic: str
    articles: list[IndexEntry]


@operation("wiki.index", capability="memory.read", writes=False)
def index(call: Call, p: NoArguments) -> list[TopicGroup]:
    """Articles grouped by topic; articles without one come last, under '(none)'."""
    return [TopicGroup.model_validate(g) for g in _wiki(call).index()]


class WikiLogIn(Input):
    limit: Limit = 50


class WikiLogEntry(Output):
    op: str | None
    target: str | None
    tx: int
    time: str
    author: str


@operation("wiki.log", capability="memory.read", writes=False)
def log(call: Call, p: WikiLogIn) -> list[WikiLogEntry]:
    """What was ingested, compiled and fixed, newest first."""
    return [WikiLogEntry.model_validate(e) for e in _wiki(call).log(p.limit)]


class LintFinding(Output):
    kind: str
    target: str
    detail: str
    fixable: bool


@operation("wiki.lint", capability="memory.read", writes=False)
def lint(call: Call, p: NoArguments) -> list[LintFinding]:
    """Where the wiki has drifted: broken links, orphan sources, stale articles,
    near-duplicate tags and uncited claims."""
    return [LintFinding.model_validate(f) for f in _wiki(call).lint()]


class Fixed(OpenOutput):
    kind: str
    target: str
    detail: str


class FixReport(Output):
    fixed: list[Fixed]
    findings: list[LintFinding]


@operation(
    "wiki.fix", capability="memory.write", writes=True, resources={"surface": ["article", "source"]}
)
def fix(call: Call, p: NoArguments) -> FixReport:
    """Apply the mechanical fixes only (tag and link spellings), then lint again."""
    wiki = _wiki(call)
    fixed: list[Any] = wiki.fix()
    return FixReport.model_validate({"fixed": fixed, "findings": wiki.lint()})
