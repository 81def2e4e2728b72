"""Which operation each HTTP route calls. The routes hold no logic of their own: a route's
path parameters, query string (GET) or JSON body (POST, PUT) become the operation's
arguments, and the door validates them.

A path parameter has the name of the input field it fills; `{name:path}` takes slashes
(entity ids and URL-encoded lookup refs may hold them).
"""

from __future__ import annotations

ROUTES: list[tuple[str, str, str]] = [
    # status, events, health
    ("GET", "/status", "status.show"),
    ("GET", "/events", "events.list"),
    ("POST", "/health/doctor", "health.doctor"),
    ("GET", "/health/findings", "health.findings"),
    # the ledger
    ("POST", "/transact", "ledger.transact"),
    ("GET", "/entities/{entity:path}/history", "ledger.history"),
    ("GET", "/entities/{entity:path}", "ledger.get"),
    ("GET", "/find", "ledger.find"),
    ("GET", "/log", "ledger.log"),
    ("POST", "/restore", "ledger.restore"),
    ("POST", "/forget", "ledger.forget"),
    ("POST", "/verify", "ledger.verify"),
    ("POST", "/checkpoints", "ledger.checkpoint"),
    ("GET", "/proofs/inclusion/{tx}", "ledger.proof.inclusion"),
    ("GET", "/proofs/consistency", "ledger.proof.consistency"),
    ("POST", "/export", "ledger.export"),
    ("POST", "/import", "ledger.import"),
    ("GET", "/schema", "schema.list"),
    ("POST", "/schema", "schema.add"),
    ("GET", "/branches", "branch.list"),
    ("POST", "/branches", "branch.create"),
    ("POST", "/branches/{name}/merge", "branch.merge"),
    ("POST", "/branches/{name}/drop", "branch.drop"),
    ("GET", "/identities", "identity.list"),
    ("POST", "/identities", "identity.add"),
    ("POST", "/identities/{name}/token", "identity.token"),
    ("POST", "/identities/{name}/revoke", "identity.revoke"),
    ("GET", "/nodes", "node.list"),
    ("POST", "/nodes", "node.approve"),
    # governance and its evidence
    ("GET", "/governance", "governance.show"),
    ("GET", "/governance/diff", "governance.diff"),
    ("GET", "/governance/check", "governance.check"),
    ("POST", "/governance/sign", "governance.sign"),
    ("POST", "/governance/restore", "governance.restore"),
    ("GET", "/audit", "audit.list"),
    ("GET", "/approvals", "approval.list"),
    ("GET", "/approvals/{id}", "approval.show"),
    ("POST", "/approvals/{id}/approve", "approval.approve"),
    ("POST", "/approvals/{id}/deny", "approval.deny"),
    ("GET", "/secrets", "secret.list"),
    ("PUT", "/secrets/{name}", "secret.set"),
    ("POST", "/secrets/{name}/remove", "secret.rm"),
    ("POST", "/secrets/{name}/grant", "secret.grant"),
    ("POST", "/secrets/{name}/revoke", "secret.revoke"),
    # cadence
    ("GET", "/cadence/jobs", "cadence.list"),
    ("POST", "/cadence/jobs", "cadence.add"),
    ("GET", "/canon/status", "canon.status"),
    ("GET", "/cadence/jobs/{name}", "cadence.show"),
    ("POST", "/cadence/jobs/{name}/run", "cadence.run"),
    ("POST", "/cadence/jobs/{name}/pause", "cadence.pause"),
    ("POST", "/cadence/jobs/{name}/resume", "cadence.resume"),
    ("GET", "/cadence/jobs/{name}/history", "cadence.history"),
    ("GET", "/cadence/runs", "cadence.runs"),
    ("GET", "/cadence/runs/{key}", "cadence.run_info"),
    ("POST", "/cadence/sync", "cadence.sync"),
    # memory
    ("POST", "/memory/remember", "memory.remember"),
    ("GET", "/memory/working", "memory.working"),
    ("POST", "/memory/entities", "memory.entity.add"),
    ("GET", "/memory/entities/{ref}", "memory.entity.show"),
    ("GET", "/memory/entities/{ref}/timeline", "memory.entity.timeline"),
    ("POST", "/memory/entities/{entity}/observations", "memory.observe"),
    ("GET", "/memory/kinds", "memory.entity.kinds"),
    ("POST", "/memory/kinds", "memory.entity.add_kind"),
    ("POST", "/memory/decisions", "memory.decide"),
    ("GET", "/memory/decisions", "memory.decisions"),
    ("PUT", "/memory/canon/{name}", "memory.canon.set"),
    ("GET", "/memory/canon", "memory.canon.list"),
    ("GET", "/memory/canon/{name}", "memory.canon.show"),
    ("POST", "/memory/episodes", "memory.episode.add"),
    ("POST", "/memory/capture", "memory.capture"),
    ("POST", "/memory/daybook", "memory.daybook.add"),
    ("GET", "/memory/daybook", "memory.daybook.day"),
    ("GET", "/memory/items", "memory.items"),
    # the wiki
    ("POST", "/memory/wiki/sources", "wiki.source.add"),
    ("GET", "/memory/wiki/sources", "wiki.sources"),
    ("PUT", "/memory/wiki/articles/{slug}", "wiki.article.write"),
    ("GET", "/memory/wiki/articles/{slug}", "wiki.article.show"),
    ("GET", "/memory/wiki/index", "wiki.index"),
    ("GET", "/memory/wiki/log", "wiki.log"),
    ("GET", "/memory/wiki/lint", "wiki.lint"),
    ("POST", "/memory/wiki/fix", "wiki.fix"),
    # recall and the vault
    ("GET", "/recall", "recall.search"),
    ("GET", "/recall/status", "recall.status"),
    ("POST", "/recall/reindex", "recall.reindex"),
    ("POST", "/vault/export", "vault.export"),
    ("POST", "/vault/import", "vault.import"),
    # shared files
    ("GET", "/files", "file.read"),
    ("POST", "/files", "file.write"),
    ("GET", "/files/history", "file.history"),
]

#: Operations HTTP does not offer, and why: they act on the machine of whoever runs them.
NOT_OVER_HTTP = {
    "service.install": "writes a unit file for the user at the terminal",
    "service.uninstall": "removes a unit file for the user at the terminal",
}
