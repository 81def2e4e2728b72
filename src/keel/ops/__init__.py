"""The door: every operation keel offers, defined once, and the one place every call passes
with the caller's identity. Surfaces (CLI, HTTP, MCP, the Python facade) sit above it and
only parse and present; subsystems sit below it."""


def version() -> str:
    """keel's version as installed (every surface reports this one)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("keel-os")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0"
