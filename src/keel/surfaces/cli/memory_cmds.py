"""CLI commands for memory and recall (being written)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the memory commands to `app`."""
