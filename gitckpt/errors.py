"""The one error hierarchy of gitckpt.

Every error a user can see is a :class:`GitckptError`; its message says what
was wrong and, where there is one, how to fix it.
"""

from __future__ import annotations


class GitckptError(Exception):
    """Base class of every error raised by gitckpt."""


class RepositoryError(GitckptError):
    """The repository path is missing, not a bare git repository, or unusable."""


class NotFoundError(GitckptError):
    """A thread, checkpoint, namespace or store item that was asked for does not exist."""


class CorruptObjectError(GitckptError):
    """A git object a checkpoint or write needs is missing or cannot be decoded."""


class StorageError(RepositoryError):
    """The file system refused a write or a read (disk full, read-only, I/O error).

    The message names the repository, the operation and the cause; the OS
    error is chained (``__cause__``). What was acknowledged before is intact.
    """


class ConflictError(GitckptError):
    """A ref could not be updated after repeated compare-and-swap retries."""


class RefLockError(ConflictError):
    """A ref stayed locked (``<ref>.lock``) for as long as a write retries.

    The message names the lock file, whether a live gitckpt process holds it,
    and what to do (docs/format.md, 17.2).
    """


class RemoteError(GitckptError):
    """A git remote is unknown or unreachable, or refused what was asked of it."""


class InvalidInputError(GitckptError, ValueError):
    """An argument is malformed (bad JSON, bad namespace, value that cannot be stored)."""


class ConfigError(GitckptError, KeyError):
    """A config lacks a key a checkpointer needs (``thread_id``), like LangGraph's savers' KeyError."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ReplayMissError(GitckptError):
    """A model or tool call during an offline replay that the recording has no answer for.

    ``kind`` (``"model"`` or ``"tool"``), ``node`` and ``step`` say where it was
    made (``ns``: the subgraph namespace, as recorded when a recorded call of that
    namespace is nearest, else without task ids; ``""`` for the root graph);
    ``diff`` compares it with the nearest recorded call."""

    def __init__(
        self,
        message: str,
        *,
        kind: str = "",
        node: str | None = None,
        step: object = None,
        diff: str = "",
        ns: str = "",
    ) -> None:
        super().__init__(message)
        self.kind, self.node, self.step, self.diff, self.ns = kind, node, step, diff, ns


class UntrustedDataError(GitckptError):
    """What a pull or clone fetched names types outside the allowlist (or cannot be
    scanned); no local ref was moved. ``report`` (a :class:`gitckpt.trust.ScanReport`)
    lists each thread, checkpoint or store item and the types it names."""

    def __init__(self, message: str, report: object) -> None:
        super().__init__(message)
        self.report = report
