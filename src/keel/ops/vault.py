"""Vault operations: memory as an Obsidian vault of markdown files, and edits made there
coming back as signed transactions. Both touch folders on the machine keel runs on, so
they need their own capabilities (`vault.export`, `vault.import`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from ..errors import BadInput
from .call import Call
from .models import Input, LocalPath, OpenOutput
from .registry import operation


class ExportIn(Input):
    dir: LocalPath
    force: bool = Field(False, description="Overwrite files changed since keel wrote them.")


class Exported(OpenOutput):
    directory: str
    version: int
    files: int


@operation("vault.export", capability="vault.export", writes=False)
def export(call: Call, p: ExportIn) -> Exported:
    """Write every memory surface as markdown under a folder (an Obsidian vault).

    Refuses, naming them, to overwrite files changed since keel wrote them (import first),
    unless told to force."""
    path = call.services.outside_home(p.dir)
    if path.exists() and not path.is_dir():
        raise BadInput(f"{path} is a file, not a folder to export a vault into")
    from ..memory import vault  # markdown and YAML: loaded when a vault is used

    return Exported.model_validate(vault.export(call.ledger, path, force=p.force))


class ImportIn(Input):
    dir: LocalPath


class ImportReport(OpenOutput):
    files: int
    unchanged: int
    applied: list[dict[str, Any]]
    merged: list[dict[str, Any]]
    conflicts: list[dict[str, Any]]
    refused: list[dict[str, Any]]
    created: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    missing: list[dict[str, Any]]
    moved: list[dict[str, Any]] = Field(default_factory=list)


@operation("vault.import", capability="vault.import", writes=True)
def import_(call: Call, p: ImportIn) -> ImportReport:
    """Record edits made in an exported vault as transactions, merging each field three
    ways; conflicts and refusals are listed, never guessed."""
    path = call.services.outside_home(p.dir)
    from ..memory import vault

    report = vault.import_vault(call.ledger, path, signer=call.signer)
    return ImportReport.model_validate(report)
