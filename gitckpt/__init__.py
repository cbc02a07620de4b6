"""gitckpt: LangGraph persistence (a checkpointer and a store) on a bare git repository."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ConflictError,
    CorruptObjectError,
    GitckptError,
    InvalidInputError,
    NotFoundError,
    RefLockError,
    RemoteError,
    ReplayMissError,
    RepositoryError,
    StorageError,
    UntrustedDataError,
)

__version__ = "0.1.0"

__all__ = [
    "GitSaver",
    "GitStore",
    "GitckptError",
    "RepositoryError",
    "NotFoundError",
    "CorruptObjectError",
    "StorageError",
    "ConflictError",
    "RefLockError",
    "RemoteError",
    "InvalidInputError",
    "ReplayMissError",
    "UntrustedDataError",
]

if TYPE_CHECKING:
    from .checkpoint.saver import GitSaver
    from .store.store import GitStore


def __getattr__(name: str) -> Any:  # import the heavy modules only when used
    if name == "GitSaver":
        from .checkpoint.saver import GitSaver

        return GitSaver
    if name == "GitStore":
        from .store.store import GitStore

        return GitStore
    raise AttributeError(name)
