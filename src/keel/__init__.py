"""keel: a local-first operating layer for AI agents, built on a signed bitemporal ledger."""
