"""Storage back ends: SQLite (the embedded default) and PostgreSQL (several processes, hosts)."""

from __future__ import annotations

from pathlib import Path

from .base import Store


def open_store(target: str | Path, blob_dir: Path | None = None) -> Store:
    """A PostgreSQL store for a `postgresql://` DSN, else a SQLite store at that path."""
    text = str(target)
    if text.startswith(("postgresql://", "postgres://")) or text.startswith("host="):
        from .postgres import PostgresStore

        return PostgresStore(text)
    from .sqlite import SqliteStore

    return SqliteStore(Path(target), blob_dir)


__all__ = ["Store", "open_store"]
