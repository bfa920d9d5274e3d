"""The JSON Lines store: the pool as day files in ``DATA_DIR``, the reference store.

``JsonlStore`` (``store.py``) appends under an ``flock`` (``appender.py``),
keeps a per-process index of open tasks (``index.py``) fed from the files'
new bytes (``tail.py``), and saves it for the next start (``checkpoint.py``).
"""

from taskpool.stores.jsonl.store import JsonlStore

__all__ = ["JsonlStore"]
