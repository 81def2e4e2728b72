"""Cadence: recurring work on rhythm, every fire recorded as a run — including missed ones."""
