"""The daemon: one process per KEEL_HOME running the bus and the scheduler."""
