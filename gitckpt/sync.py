"""Sharing a repository through ordinary git remotes: pull, push, sync.

No click here: the CLI (``gitckpt pull``/``push``/``sync``) only renders what
these functions return. Transport is libgit2's (pygit2): ``git://``, ``ssh``,
``https``, ``file://`` and plain paths. docs/format.md, section 14, gives the
decisions and their reasons; in short:

* **Fetch into a private namespace.** The remote's gitckpt refs are fetched
  into ``refs/remotes/<name>/...`` (a URL that is not a configured remote:
  a temporary ``refs/gitckpt-fetch/<random>/...``, deleted afterwards), which
  the saver and the store never read. Only then are local refs moved, one by
  one, each by compare-and-swap (``GitRepo.update_ref``); a lost race is
  decided again against the new tip.
* **Per line of history** (``threads/<T>``, ``forks/<T>/<id>``,
  ``subgraphs/<T>/<NS>[@<id>]``): a remote tip already contained in one of
  the thread's local lines changes nothing; a missing ref is created; a ref
  the remote moved forward is fast-forwarded; a ref both sides moved keeps
  its local line and gets the remote's line as a *fork line* named the way the
  saver names one (``fmt.line_ref`` with the first checkpoint id of the
  remote's divergent part). LangGraph's "latest = greatest checkpoint id" then
  picks the newest checkpoint of either side. Nothing is rewritten.
* **The store branch** fast-forwards, or, when both sides changed it, gets a
  real merge commit (two parents): every item changed on one side only is
  taken from it; an item changed on both sides keeps the version with the
  later ``updated_at`` (then the later ``expires_at``, then the greater blob
  id: both sides of a merge pick the same one); an item deleted on one side
  and changed on the other is kept. Items carry their own vectors, so the
  merged tree needs nothing recomputed.
* **Push** never forces. A ref the remote lacks, or that fast-forwards the
  remote's, is pushed. A local line that diverged from the remote's line of the
  same name is pushed as a fork line of the thread on the remote *if the
  remote's line is already here* (it was pulled); otherwise the ref is
  rejected: pull first. A diverged store is rejected likewise (pull merges it).
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import pygit2
from pygit2.enums import CredentialType, SortMode

from .checkpoint import format as fmt
from .checkpoint.threads import line_tips
from .errors import CorruptObjectError, NotFoundError, RemoteError
from .git import names, trailers
from .git.repo import BLOB, GitRepo, retry_cas
from .store.format import DELETE, PUT, STORE_REF, is_item_path, parse_iso, unpack_item

DEFAULT_REMOTE = "origin"

HEADS = fmt.HEADS
_LINE_PREFIXES = fmt.LINE_PREFIXES

# statuses of a ref, pull side
CREATED = "created"
FAST_FORWARDED = "fast-forwarded"
UP_TO_DATE = "up to date"
FORKED = "forked"  # diverged: the other side's line kept as a fork line
MERGED = "merged"  # the store: a merge commit
DIVERGED = "diverged"  # could not be kept (a fork ref of that name holds another line)
# push side
PUSHED = "pushed"
REJECTED = "rejected"


@dataclasses.dataclass
class RefResult:
    """What happened to one ref."""

    ref: str  # the ref on this side (``refs/heads/threads/1``; the local ref for a push)
    status: str  # one of the statuses above
    old: str | None = None  # the ref's commit before (on the side that changed)
    new: str | None = None  # and after
    target: str | None = None  # the ref that moved, when not ``ref`` (a fork line)
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "ref": _short(self.ref), "status": self.status, "old": self.old, "new": self.new,
            "target": _short(self.target) if self.target else None, "detail": self.detail,
        }


@dataclasses.dataclass
class Result:
    """The outcome of a pull or a push: one :class:`RefResult` per ref looked at."""

    action: str  # "pull" | "push"
    remote: str  # the remote as named by the caller (name or URL)
    url: str
    refs: list[RefResult] = dataclasses.field(default_factory=list)

    @property
    def failed(self) -> list[RefResult]:
        """The refs that could not be pushed or pulled (rejected, diverged)."""
        return [r for r in self.refs if r.status in (REJECTED, DIVERGED)]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def changed(self) -> list[RefResult]:
        return [r for r in self.refs if r.status != UP_TO_DATE]

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "remote": self.remote, "url": self.url, "ok": self.ok,
                "refs": [r.to_dict() for r in self.refs]}


@dataclasses.dataclass
class SyncResult:
    pull: Result
    push: Result

    @property
    def ok(self) -> bool:
        return self.pull.ok and self.push.ok

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "pull": self.pull.to_dict(), "push": self.push.to_dict()}


def _short(ref: str) -> str:
    return ref[len(HEADS):] if ref.startswith(HEADS) else ref


# -- remotes ---------------------------------------------------------------------------


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


class _Remote:
    """A remote resolved from a name or a URL, and where its refs are fetched to."""

    def __init__(self, repo: GitRepo, remote: str | None) -> None:
        self.repo = repo
        self.name = remote or DEFAULT_REMOTE
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

    def heads(self) -> dict[str, pygit2.Oid]:
        """The remote's gitckpt refs (line refs and ``store``) and their commits."""
        try:
            heads = self._make().list_heads(callbacks=_Callbacks())
        except pygit2.GitError as exc:
            raise self._error(exc) from exc
        return {h.name: h.oid for h in heads if h.name == STORE_REF or h.name.startswith(_LINE_PREFIXES)}

    def fetch(self, names: Iterable[str]) -> dict[str, pygit2.Oid]:
        """Fetch ``names`` (remote refs) into the tracking namespace; their commits here."""
        names = sorted(names)
        if not names:
            return {}
        specs = [f"+{n}:{self.local_name(n)}" for n in names]
        try:
            self._make().fetch(specs, callbacks=_Callbacks(), prune=pygit2.enums.FetchPrune.NO_PRUNE,
                              message="gitckpt pull")
        except pygit2.GitError as exc:
            raise self._error(exc) from exc
        out = {}
        for n in names:
            oid = self.repo.ref(self.local_name(n))
            if oid is not None:
                out[n] = oid
        return out

    def local_name(self, remote_ref: str) -> str:
        return self.tracking + remote_ref[len(HEADS):]

    def cleanup(self) -> None:
        if not self.temporary:
            return
        for ref in list(self.repo.repo.references.iterator()):
            if ref.name.startswith(self.tracking):
                try:
                    ref.delete()
                except pygit2.GitError:
                    pass

    def push(self, specs: list[str]) -> dict[str, str]:
        """Push ``specs`` (never forced); the refs the server refused, with its reason."""
        cb = _Callbacks()
        try:
            self._make().push(specs, callbacks=cb)
        except pygit2.GitError as exc:
            msg = " ".join(str(exc).split())
            if "non-fastforward" in msg:
                raise RemoteError(
                    f"remote {self.label} changed during the push ({msg}); pull first, then push again"
                ) from exc
            raise self._error(exc) from exc
        return cb.refused


# -- which refs ------------------------------------------------------------------------


def _thread_of_ref(ref: str) -> str | None:
    """The encoded thread component of a line ref (``None`` for ``store``)."""
    parsed = fmt.parse_line_ref(ref)
    return parsed[0] if parsed else None


def _select(refs: dict[str, pygit2.Oid], threads: Sequence[str] | None, store: bool) -> dict[str, pygit2.Oid]:
    out = {}
    wanted = None if threads is None else {names.encode_ref_component(t) for t in threads}
    for ref, oid in refs.items():
        if ref == STORE_REF:
            if store:
                out[ref] = oid
        elif ref.startswith(_LINE_PREFIXES):
            t = _thread_of_ref(ref)
            if t is not None and (wanted is None or t in wanted):
                out[ref] = oid
    return out


def _local_refs(repo: GitRepo) -> dict[str, pygit2.Oid]:
    return repo.refs(*_LINE_PREFIXES, names=(STORE_REF,))


def _contains(repo: GitRepo, tip: pygit2.Oid, oid: pygit2.Oid) -> bool:
    """``oid`` is ``tip`` or one of its ancestors."""
    if tip == oid:
        return True
    if not repo.has(tip) or not repo.has(oid):
        return False
    return repo.repo.descendant_of(tip, oid)


def fork_ref_for(repo: GitRepo, ref: str, base: pygit2.Oid, tip: pygit2.Oid) -> str:
    """The fork line that keeps ``tip`` when it diverged from ``base`` on ``ref``.

    Named as the saver names a fork line (``fmt.line_ref``): by the first
    checkpoint of the divergent part (the commits of ``tip`` not in ``base``),
    in that checkpoint's namespace; a divergent part holding only pending
    writes is named by the checkpoint they were written for.
    """
    walker = repo.repo.walk(tip, SortMode.TOPOLOGICAL | SortMode.REVERSE)
    walker.hide(base)
    first_writes = None
    for commit in walker:
        t = trailers.parse_trailers(commit.message)
        kind = t.get(fmt.KIND)
        if kind == "checkpoint" and fmt.CHECKPOINT in t:
            return fmt.line_ref(_thread_id(ref, t), t.get(fmt.NS, ""), t[fmt.CHECKPOINT])
        if kind == "writes" and first_writes is None and fmt.WRITES_FOR in t:
            first_writes = t
    if first_writes is not None:
        return fmt.line_ref(_thread_id(ref, first_writes), first_writes.get(fmt.NS, ""),
                               first_writes[fmt.WRITES_FOR])
    # no gitckpt commit in the divergent part (written by hand): name it by commit
    t = names.decode(_thread_of_ref(ref) or "") or ""
    return fmt.line_ref(t, "", f"commit-{str(tip)[:12]}")


def _thread_id(ref: str, found: dict[str, str]) -> str:
    tid = found.get(fmt.THREAD)
    if tid is None:
        tid = names.decode(_thread_of_ref(ref) or "") or ""
    return tid


# -- pull ------------------------------------------------------------------------------


def _open(repo: GitRepo | str | os.PathLike) -> tuple[GitRepo, bool]:
    if isinstance(repo, GitRepo):
        return repo, False
    return GitRepo(repo, create=False), True


def pull(repo: GitRepo | str | os.PathLike, remote: str | None = None, threads: Sequence[str] | None = None,
         store: bool = True) -> Result:
    """Bring the remote's threads (all, or the ones named) and store branch here.

    ``repo`` is a path or an open :class:`GitRepo`; ``remote`` a configured
    remote's name (default ``origin``) or a URL. Local refs only ever move
    forward or are created; see the module's docstring for what happens to
    each ref. Raises :class:`RemoteError` (unknown or unreachable remote) and
    :class:`NotFoundError` (a named thread the remote does not have).
    """
    r, owned = _open(repo)
    try:
        rem = _Remote(r, remote)
        result = Result("pull", rem.name, rem.url)
        try:
            heads = _select(rem.heads(), threads, store)
            _require_threads(heads, threads, lambda t: f"remote {rem.label} has no thread {t!r}")
            fetched = rem.fetch(heads)
            lines = sorted((n for n in fetched if n != STORE_REF), key=lambda n: (not n.startswith(_LINE_PREFIXES[0]), n))
            for name in lines:
                result.refs.append(_pull_line(r, name, fetched[name]))
            if STORE_REF in fetched:
                result.refs.append(_pull_store(r, fetched[STORE_REF], rem.name))
        finally:
            rem.cleanup()
        return result
    finally:
        if owned:
            r.close()


def _require_threads(refs: dict[str, pygit2.Oid], threads: Sequence[str] | None, missing) -> None:
    if not threads:
        return
    have = {_thread_of_ref(ref) for ref in refs}
    for t in threads:
        if names.encode_ref_component(t) not in have:
            raise NotFoundError(missing(t))


def _pull_line(repo: GitRepo, name: str, theirs: pygit2.Oid) -> RefResult:
    encoded = _thread_of_ref(name) or ""

    def attempt() -> RefResult | None:
        mine = repo.ref(name)
        for line, tip in line_tips(repo, encoded).items():
            if _contains(repo, tip, theirs):
                detail = "" if line == name else f"already in {_short(line)}"
                return RefResult(name, UP_TO_DATE, _hex(mine), _hex(mine), detail=detail)
        if mine is None:
            if not repo.update_ref(name, None, theirs):
                return None
            return RefResult(name, CREATED, None, str(theirs))
        if _contains(repo, theirs, mine):
            if not repo.update_ref(name, mine, theirs):
                return None
            return RefResult(name, FAST_FORWARDED, str(mine), str(theirs))
        fork = fork_ref_for(repo, name, mine, theirs)
        held = repo.ref(fork)
        if held is None:
            if not repo.update_ref(fork, None, theirs):
                return None
            return RefResult(name, FORKED, None, str(theirs), target=fork,
                             detail=f"both sides added checkpoints; the remote's line is {_short(fork)}")
        if _contains(repo, theirs, held):
            if not repo.update_ref(fork, held, theirs):
                return None
            return RefResult(name, FORKED, str(held), str(theirs), target=fork,
                             detail=f"both sides added checkpoints; the remote's line is {_short(fork)}")
        return RefResult(name, DIVERGED, str(mine), str(mine), target=fork,
                         detail=f"{_short(fork)} already holds another line; nothing changed")

    return retry_cas(attempt, f"pull of {_short(name)}")


def _hex(oid: pygit2.Oid | None) -> str | None:
    return None if oid is None else str(oid)


# -- the store branch: fast-forward or a three-way merge --------------------------------


def _pull_store(repo: GitRepo, theirs: pygit2.Oid, remote_name: str) -> RefResult:
    def attempt() -> RefResult | None:
        mine = repo.ref(STORE_REF)
        if mine is not None and _contains(repo, mine, theirs):
            return RefResult(STORE_REF, UP_TO_DATE, str(mine), str(mine))
        if mine is None or _contains(repo, theirs, mine):
            if not repo.update_ref(STORE_REF, mine, theirs):
                return None
            return RefResult(STORE_REF, CREATED if mine is None else FAST_FORWARDED, _hex(mine), str(theirs))
        merge, taken = merge_store(repo, mine, theirs, remote_name)
        if not repo.update_ref(STORE_REF, mine, merge):
            return None
        return RefResult(STORE_REF, MERGED, str(mine), str(merge),
                         detail=f"both sides changed the store; {taken} item change(s) taken from the remote")

    return retry_cas(attempt, "pull of the store")


def _item_order(repo: GitRepo, oid: pygit2.Oid) -> tuple:
    body = unpack_item(repo.read_blob(oid, "store item"), "store item")
    return (parse_iso(body.get("updated_at")) or 0, parse_iso(body.get("expires_at")) or 0, str(oid))


def _winner(repo: GitRepo, ours: pygit2.Oid | None, theirs: pygit2.Oid | None) -> pygit2.Oid | None:
    """The item version a merge keeps when both sides changed it."""
    if ours is None or theirs is None:  # deleted on one side, changed on the other: keep it
        return ours if ours is not None else theirs
    return ours if _item_order(repo, ours) >= _item_order(repo, theirs) else theirs


def merge_store(repo: GitRepo, ours: pygit2.Oid, theirs: pygit2.Oid, remote_name: str) -> tuple[pygit2.Oid, int]:
    """A merge commit (parents ``ours``, ``theirs``) of two store histories.

    Returns the commit (written, no ref moved) and how many item changes it
    took from ``theirs``. Its trailers name those changes (``Store-Put``,
    ``Store-Delete``), so ``gitckpt store log`` shows them at the merge.
    """
    base = repo.repo.merge_base(ours, theirs)
    base_tree = repo.commit_info(base, "store commit").tree_id if base is not None else None
    our_tree = repo.commit_info(ours, "store commit").tree_id
    their_tree = repo.commit_info(theirs, "store commit").tree_id
    our_diff = {path: new for path, _old, new in repo.diff_trees(base_tree, our_tree)}
    changes: dict = {}
    pairs: list[tuple[str, Any]] = [(trailers.KIND, "store")]
    taken = 0
    for path, old, new in sorted(repo.diff_trees(base_tree, their_tree), key=lambda x: x[0]):
        if path in our_diff:
            mine = our_diff[path]
            if mine == new:
                continue
            if not is_item_path(path):
                raise CorruptObjectError(
                    f"cannot merge the store: {path} changed on both sides and is not a store item; "
                    "merge the store branch by hand with git"
                )
            if _winner(repo, mine, new) == mine:
                continue
        node = changes
        parts = path.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = None if new is None else (new, BLOB)
        if is_item_path(path):
            body = unpack_item(repo.read_blob(new if new is not None else old, "store item"), f"store item {path}")
            kind = PUT if new is not None else DELETE
            pairs.append((kind, _json_path(body["namespace"], body["key"])))
        taken += 1
    tree = repo.update_tree(our_tree, changes) if changes else our_tree
    if tree is None:
        tree = repo.tree({})
    subject = f"merge store from {remote_name}" + (f": {taken} change(s)" if taken else "")
    return repo.commit(tree, [ours, theirs], trailers.build_message(subject, pairs)), taken


def _json_path(namespace: Iterable[str], key: str) -> str:
    import json

    return json.dumps([*namespace, key], ensure_ascii=False)


# -- push ------------------------------------------------------------------------------


def push(repo: GitRepo | str | os.PathLike, remote: str | None = None, threads: Sequence[str] | None = None,
         store: bool = True) -> Result:
    """Send this repository's threads (all, or the ones named) and store branch.

    Never forced. Each ref is pushed when the remote lacks it or when it
    fast-forwards the remote's; a line that diverged from the remote's line of
    the same name is pushed as a fork line of the thread when the remote's
    line is already here (pulled), else it is rejected (pull first). A
    rejected ref makes ``Result.ok`` false.
    """
    r, owned = _open(repo)
    try:
        rem = _Remote(r, remote)
        result = Result("push", rem.name, rem.url)
        local = _select(_local_refs(r), threads, store)
        _require_threads(local, threads, lambda t: f"no thread {t!r} in {r.path}")
        theirs = rem.heads()
        specs: list[tuple[str, RefResult]] = []
        order = sorted(local, key=lambda n: (n == STORE_REF, not n.startswith(_LINE_PREFIXES[0]), n))
        for name in order:
            ref_result, target = _plan_push(r, name, local[name], theirs)
            result.refs.append(ref_result)
            if target is not None:
                specs.append((f"{name}:{target}", ref_result))
        if specs:
            refused = rem.push([s for s, _ in specs])
            for spec, ref_result in specs:
                target = spec.partition(":")[2]
                if target in refused:
                    ref_result.status = REJECTED
                    ref_result.detail = f"the remote refused it ({refused[target]}); pull first"
        return result
    finally:
        if owned:
            r.close()


def _plan_push(repo: GitRepo, name: str, mine: pygit2.Oid,
               remote: dict[str, pygit2.Oid]) -> tuple[RefResult, str | None]:
    """What to do with local ref ``name``: its result, and the remote ref to push it to."""
    theirs = remote.get(name)
    if name == STORE_REF:
        same_thread: dict[str, pygit2.Oid] = {name: theirs} if theirs is not None else {}
    else:
        t = _thread_of_ref(name)
        same_thread = {n: o for n, o in remote.items() if n != STORE_REF and _thread_of_ref(n) == t}
    for line, tip in same_thread.items():
        if _contains(repo, tip, mine):
            detail = "" if line == name else f"already in {_short(line)} on the remote"
            return RefResult(name, UP_TO_DATE, str(tip), str(tip), detail=detail), None
    if theirs is None:
        return RefResult(name, PUSHED, None, str(mine), detail="new"), name
    if _contains(repo, mine, theirs):
        return RefResult(name, PUSHED, str(theirs), str(mine), detail="fast-forward"), name
    pulled = name != STORE_REF and repo.has(theirs) and any(
        _contains(repo, tip, theirs) for tip in line_tips(repo, _thread_of_ref(name) or "").values()
    )
    if not pulled:
        what = "store" if name == STORE_REF else "line"
        return RefResult(name, REJECTED, str(theirs), str(theirs),
                         detail=f"the remote's {what} has changes you do not have; pull first"), None
    fork = fork_ref_for(repo, name, theirs, mine)
    held = remote.get(fork)
    if held is None:
        return RefResult(name, FORKED, None, str(mine), target=fork,
                         detail=f"both sides added checkpoints; pushed as {_short(fork)}"), fork
    if _contains(repo, mine, held):
        return RefResult(name, FORKED, str(held), str(mine), target=fork,
                         detail=f"both sides added checkpoints; pushed as {_short(fork)}"), fork
    return RefResult(name, REJECTED, str(theirs), str(theirs), target=fork,
                     detail=f"the remote's {_short(fork)} has changes you do not have; pull first"), None


def sync(repo: GitRepo | str | os.PathLike, remote: str | None = None, threads: Sequence[str] | None = None,
         store: bool = True) -> SyncResult:
    """:func:`pull`, then :func:`push`: afterwards both sides hold every checkpoint."""
    r, owned = _open(repo)
    try:
        pulled = pull(r, remote, threads, store)
        pushed = push(r, remote, threads, store)
        return SyncResult(pulled, pushed)
    finally:
        if owned:
            r.close()
