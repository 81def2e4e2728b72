"""The door: every operation keel offers, defined once, and the one place every call passes
with the caller's identity. Surfaces (CLI, HTTP, MCP, the Python facade) sit above it and
only parse and present; subsystems sit below it."""
