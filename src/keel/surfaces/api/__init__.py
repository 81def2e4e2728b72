"""The HTTP API: versioned JSON under /api/v1, token-protected, served by the daemon."""
