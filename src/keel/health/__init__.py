"""Health: checks that catch rot and silence, recorded as findings in the ledger."""
