"""The store: its commit format, the in-memory index and ``GitStore``.

``from gitckpt.store import GitStore`` works; the heavy module is imported only
when ``GitStore`` is used, so ``gitckpt.store.format`` stays import-light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import GitStore

__all__ = ["GitStore"]


def __getattr__(name: str) -> Any:
    if name == "GitStore":
        from .store import GitStore

        return GitStore
    raise AttributeError(name)
