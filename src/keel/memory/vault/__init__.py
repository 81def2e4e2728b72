"""The vault: every memory surface as markdown with YAML frontmatter, in a folder that opens
as an Obsidian vault; edits made there come back as signed transactions.

The ledger stays the one source of truth: `export` renders a view of it, `import_vault`
records what was done to that view, merging each field three ways (the file, the ledger as
of the version the file was rendered at, the ledger now). Layout (the keel id in the
frontmatter, not the path, names the item; a file the user moved or made stays where it is):

    index.md                          links to everything
    entities/<name>.md                facts, aliases, links; summary; generated timeline
    wiki/<article slug>.md            compiled articles
    sources/<8 hex digits>.md         raw sources (immutable)
    decisions/<date>-<id>.md          body = why
    canon/<name>.md
    episodes/<date>-<id>.md
    capture/<date>-<id>.md
    daybook/<YYYY-MM-DD>-<id>.md      one file per entry
    working/<scope>-<id>.md           current (unexpired) working memory only
    .keel/vault.json                  what keel wrote where (`manifest.py`)

Modules: `fields` (what a file states), `names` (file names, where items live, which file a
link reaches), `linking` (links between keel's meaning and Obsidian's), `render` (ledger to
markdown), `document` (markdown back to fields), `manifest`, `exporter`, `importer`,
`merge` (an edited file) and `create` (a new note).
"""

from .exporter import ChangedFiles, export
from .importer import import_, import_vault
from .merge import merge_text

__all__ = ["ChangedFiles", "export", "import_", "import_vault", "merge_text"]
