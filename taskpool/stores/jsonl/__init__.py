"""The JSON Lines store: the pool as day files in ``DATA_DIR``, the reference store.

``JsonlStore`` (``store.py``) appends under an ``flock`` (``appender.py``),
keeps a per-process index of open tasks (``index.py``) fed from the files'
new bytes (``tail.py``), and saves it for the next start (``checkpoint.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskpool.stores.jsonl.store import JsonlStore


def __getattr__(name: str) -> Any:
    # Imported when first asked for, not with the package: a first start's replay
    # workers import only the index's modules, which saves each of them a fifth of
    # a second of imports (Django's, the store's).
    if name == "JsonlStore":
        from taskpool.stores.jsonl.store import JsonlStore

        return JsonlStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["JsonlStore"]
