"""Governance: who may act (identities and their keys) and, later, pins, approvals, budgets."""
