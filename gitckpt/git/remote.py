"""A git remote, for fetching and pushing: libgit2's transports (``git://``,
``ssh``, ``https``, ``file://`` and plain paths).

Resolved from a configured remote's name or from a URL; a URL is fetched into a
temporary namespace (``refs/gitckpt-fetch/<random>/``) that :meth:`Remote.cleanup`
deletes. What to fetch and how to move local refs afterwards is the caller's
(``gitckpt/sync.py``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable
from typing import NoReturn

import pygit2
from pygit2.enums import CredentialType

from ..errors import RefLockError, RemoteError
from .locks import lock_in_error
from .repo import GitRepo


class _Callbacks(pygit2.RemoteCallbacks):
    """ssh keys from the agent; per-ref answers of the server to a push."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: dict[str, str] = {}

    def credentials(self, url, username_from_url, allowed_types):  # noqa: D401 - libgit2's hook
        if allowed_types & CredentialType.SSH_KEY:
            return pygit2.KeypairFromAgent(username_from_url or "git")
        raise pygit2.Passthrough

    def push_update_reference(self, refname: str, message: str | None) -> None:
        if message:
            self.refused[refname] = message


def _looks_like_url(text: str) -> bool:
    if "://" in text or text.startswith(("/", ".", "~")):
        return True
    head, sep, _ = text.partition(":")
    if sep and "@" in head and "/" not in head:  # scp-like ssh: git@host:path
        return True
    return os.path.sep in text or os.path.exists(text)


class Remote:
    """A remote resolved from a name or a URL, and where its refs are fetched to."""

    def __init__(self, repo: GitRepo, remote: str | None, default: str = "origin") -> None:
        self.repo = repo
        self.name = remote or default
        configured = None
        try:
            configured = repo.repo.remotes[self.name]
        except (KeyError, ValueError, pygit2.GitError):
            pass
        if configured is not None:
            self.url = configured.url or ""
            self._make = lambda: repo.repo.remotes[self.name]
            self.tracking = f"refs/remotes/{self.name}/"
            self.temporary = False
            self.label = f"{self.name!r} ({self.url})"
            return
        if not _looks_like_url(self.name):
            raise RemoteError(
                f"no remote {self.name!r} in {repo.path} (add one with "
                f"`git --git-dir {repo.path} remote add {self.name} URL`, or give a URL)"
            )
        url = self.name
        if "://" not in url and not ("@" in url.partition(":")[0] and ":" in url):
            path = os.path.abspath(os.path.expanduser(url))
            if not os.path.isdir(path):
                raise RemoteError(f"remote {url!r}: no repository at {path}")
            url = path
        self.url = url
        self._make = lambda: repo.repo.remotes.create_anonymous(url)
        self.tracking = f"refs/gitckpt-fetch/{uuid.uuid4().hex[:12]}/"
        self.temporary = True
        self.label = repr(self.name)

    def _error(self, exc: pygit2.GitError) -> RemoteError:
        msg = " ".join(str(exc).split())
        if "could not find repository" in msg or "repository not found" in msg.lower():
            return RemoteError(f"remote {self.label} is not a git repository ({msg})")
        return RemoteError(f"cannot reach remote {self.label}: {msg}")

    def heads(self, accept: Callable[[str], bool]) -> dict[str, pygit2.Oid]:
        """The remote's refs whose names ``accept`` takes, and their commits."""
        try:
            heads = self._make().list_heads(callbacks=_Callbacks())
        except pygit2.GitError as exc:
            raise self._error(exc) from exc
        return {h.name: h.oid for h in heads if h.name and accept(h.name)}

    def fetch(self, names: Iterable[str]) -> dict[str, pygit2.Oid]:
        """Fetch ``names`` (remote refs) into the tracking namespace; their commits here."""
        names = sorted(names)
        if not names:
            return {}
        specs = [f"+{n}:{self.local_name(n)}" for n in names]
        for attempt in range(2):
            try:
                self._make().fetch(
                    specs, callbacks=_Callbacks(), prune=pygit2.enums.FetchPrune.NO_PRUNE, message="gitckpt pull"
                )
                break
            except pygit2.GitError as exc:
                # libgit2 writes the tracking refs under git's lock files: the same stale-lock rule
                locked = lock_in_error(exc)
                if locked is None:
                    raise self._error(exc) from exc
                if attempt == 1 or not locked[0]:
                    raise RefLockError(f"pull from {self.label}: {locked[1] or exc}") from exc
        out = {}
        for n in names:
            oid = self.repo.ref(self.local_name(n))
            if oid is not None:
                out[n] = oid
        return out

    def local_name(self, remote_ref: str) -> str:
        return self.tracking + remote_ref.removeprefix("refs/heads/")

    def cleanup(self) -> None:
        if not self.temporary:
            return
        self.repo.delete_refs_under(self.tracking)

    def push(self, specs: list[str]) -> dict[str, str]:
        """Push ``specs`` (never forced); the refs the server refused, with its reason."""
        for attempt in range(2):
            cb = _Callbacks()
            try:
                self._make().push(specs, callbacks=cb)
                return cb.refused
            except pygit2.GitError as exc:
                # libgit2 then moves the local tracking refs, under git's lock files
                locked = lock_in_error(exc)
                if locked is None:
                    self._push_error(exc)
                if attempt == 1 or not locked[0]:
                    raise RefLockError(f"push to {self.label}: {locked[1] or exc}") from exc
        return cb.refused

    def _push_error(self, exc: pygit2.GitError) -> NoReturn:
        msg = " ".join(str(exc).split())
        if "non-fastforward" in msg:
            raise RemoteError(
                f"remote {self.label} changed during the push ({msg}); pull first, then push again"
            ) from exc
        raise self._error(exc) from exc
