"""taskpool: an append-only task pool for device fleets, as a reusable Django app."""

__version__ = "0.1.0"
