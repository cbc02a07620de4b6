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
from collections.abc import Iterable, Sequence
from typing import Any

from .checkpoint import format as fmt
from .checkpoint.index import line_tips
from .errors import InvalidInputError, NotFoundError, UntrustedDataError
from .git import names
from .git.locks import retry_cas
from .git.remote import Remote
from .git.repo import GitRepo, Oid
from .store.format import STORE_REF
from .store.merge import merge_store

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
            "ref": _short(self.ref),
            "status": self.status,
            "old": self.old,
            "new": self.new,
            "target": _short(self.target) if self.target else None,
            "detail": self.detail,
        }


@dataclasses.dataclass
class Result:
    """The outcome of a pull or a push: one :class:`RefResult` per ref looked at."""

    action: str  # "pull" | "push"
    remote: str  # the remote as named by the caller (name or URL)
    url: str
    refs: list[RefResult] = dataclasses.field(default_factory=list)
    #: a pull's check of what it fetched (trust.ScanReport; None for a push)
    scan: Any = None

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
        out = {
            "action": self.action,
            "remote": self.remote,
            "url": self.url,
            "ok": self.ok,
            "refs": [r.to_dict() for r in self.refs],
        }
        if self.scan is not None:
            out["scan"] = self.scan.to_dict()
        return out


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
    return ref[len(HEADS) :] if ref.startswith(HEADS) else ref


# -- which refs ------------------------------------------------------------------------


def _is_shared_ref(ref: str) -> bool:
    """The refs gitckpt shares: every line of every thread, and the store."""
    return ref == STORE_REF or ref.startswith(_LINE_PREFIXES)


def _thread_of_ref(ref: str) -> str | None:
    """The encoded thread component of a line ref (``None`` for ``store``)."""
    parsed = fmt.parse_line_ref(ref)
    return parsed[0] if parsed else None


def _select(refs: dict[str, Oid], threads: Sequence[str] | None, store: bool) -> dict[str, Oid]:
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


def _local_refs(repo: GitRepo) -> dict[str, Oid]:
    return repo.refs(*_LINE_PREFIXES, names=(STORE_REF,))


def _contains(repo: GitRepo, tip: Oid, oid: Oid) -> bool:
    """``oid`` is ``tip`` or one of its ancestors."""
    if tip == oid:
        return True
    if not repo.has(tip) or not repo.has(oid):
        return False
    return repo.descendant_of(tip, oid)


def fork_ref_for(repo: GitRepo, ref: str, base: Oid, tip: Oid) -> str:
    """The fork line that keeps ``tip`` when it diverged from ``base`` on ``ref``.

    Named as the saver names a fork line (``fmt.line_ref``): by the first
    checkpoint of the divergent part (the commits of ``tip`` not in ``base``),
    in that checkpoint's namespace; a divergent part holding only pending
    writes is named by the checkpoint they were written for.
    """
    first_writes = None
    for commit in repo.walk_new(tip, base):
        meta = fmt.parse_commit(commit.message)
        if meta.kind is fmt.Kind.CHECKPOINT and meta.checkpoint_id:
            return fmt.line_ref(_thread_id(ref, meta), meta.ns, meta.checkpoint_id)
        if meta.kind is fmt.Kind.WRITES and first_writes is None and meta.writes_for:
            first_writes = meta
    if first_writes is not None:
        return fmt.line_ref(_thread_id(ref, first_writes), first_writes.ns, first_writes.writes_for)
    # no gitckpt commit in the divergent part (written by hand): name it by commit
    t = names.decode(_thread_of_ref(ref) or "") or ""
    return fmt.line_ref(t, "", f"commit-{str(tip)[:12]}")


def _thread_id(ref: str, meta: fmt.CommitMeta) -> str:
    tid = meta.thread_id
    if tid is None:
        tid = names.decode(_thread_of_ref(ref) or "") or ""
    return tid


# -- pull ------------------------------------------------------------------------------


def _open(repo: GitRepo | str | os.PathLike) -> tuple[GitRepo, bool]:
    if isinstance(repo, GitRepo):
        return repo, False
    return GitRepo(repo, create=False), True


def pull(
    repo: GitRepo | str | os.PathLike,
    remote: str | None = None,
    threads: Sequence[str] | None = None,
    store: bool = True,
    *,
    trust: bool = False,
    allow: Iterable[Any] = (),
    serde: Any = None,
) -> Result:
    """Bring the remote's threads (all, or the ones named) and store branch here.

    ``repo`` is a path or an open :class:`GitRepo`; ``remote`` a configured
    remote's name (default ``origin``) or a URL. Local refs only ever move
    forward or are created; see the module's docstring for what happens to
    each ref.

    What is fetched is checked before any local ref moves (docs/format.md, 16):
    every blob the fetched commits add is scanned, without decoding it into
    objects, for values naming a type outside LangGraph's safe types, ``allow``
    and the repository's ``gitckpt.allow`` config, and for values that cannot
    be scanned (pickled; encrypted, unless ``serde`` is the
    ``EncryptedSerializer`` with the key, whose cipher decrypts them for the
    scan). If any is found, :class:`UntrustedDataError` is raised, naming each
    thread and checkpoint (or store item) and the types (``exc.report``), and
    nothing moved; ``trust=True`` moves the refs anyway (the scan is still in
    ``Result.scan``).

    Raises :class:`RemoteError` (unknown or unreachable remote),
    :class:`NotFoundError` (a named thread the remote does not have) and
    :class:`UntrustedDataError`.
    """
    from .trust import cipher_of, normalize, repo_allowlist, scan_new

    r, owned = _open(repo)
    try:
        rem = Remote(r, remote, DEFAULT_REMOTE)
        result = Result("pull", rem.name, rem.url)
        try:
            heads = _select(rem.heads(_is_shared_ref), threads, store)
            _require_threads(heads, threads, lambda t: f"remote {rem.label} has no thread {t!r}")
            fetched = rem.fetch(heads)
            allowed = normalize(allow) | repo_allowlist(r)
            result.scan = scan_new(r, fetched.values(), _local_refs(r).values(), allowed, cipher_of(serde))
            if not result.scan.ok and not trust:
                raise UntrustedDataError(_untrusted_message(rem.label, result.scan), result.scan)
            lines = sorted(
                (n for n in fetched if n != STORE_REF), key=lambda n: (not n.startswith(_LINE_PREFIXES[0]), n)
            )
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


def _untrusted_message(label: str, scan: Any) -> str:
    n = len(scan.findings)
    return (
        f"remote {label} sent {n} value(s) naming types outside the allowlist, or that cannot be "
        f"checked ({', '.join(scan.types())}); no local ref was moved:\n  "
        + "\n  ".join(scan.lines())
        + "\nReading them with LangGraph's default serializer would construct those types (run their code). "
        "Allow your own state types with `gitckpt allow module:Name` (git config gitckpt.allow) or --allow, "
        "or pass --trust (trust=True) if you trust whoever wrote them."
    )


def clone(
    url: str,
    path: str | os.PathLike,
    *,
    trust: bool = False,
    allow: Iterable[Any] = (),
    serde: Any = None,
    remote_name: str = DEFAULT_REMOTE,
) -> Result:
    """A new bare gitckpt repository at ``path`` holding ``url``'s threads and store.

    Configured as every repository gitckpt opens is (the textconv driver), with
    ``url`` as remote ``remote_name`` (``origin``), and with ``allow`` (types
    given as ``module:Name``) recorded in its ``gitckpt.allow`` config. The
    threads and the store come in by :func:`pull`, checked the same way: on
    :class:`UntrustedDataError` (or any failure) the new repository is removed.
    """
    from .trust import add_to_repo, normalize

    target = os.path.abspath(os.fspath(path))
    if os.path.exists(target) and (not os.path.isdir(target) or os.listdir(target)):
        raise InvalidInputError(f"cannot clone into {target}: it exists and is not an empty directory")
    existed = os.path.exists(target)
    allowed = normalize(allow)
    r = GitRepo(target, create=True)
    ok = False
    try:
        r.add_remote(remote_name, url)
        if allowed:
            add_to_repo(r, [f"{m}:{n}" for m, n in sorted(allowed)])
        result = pull(r, remote_name, trust=trust, serde=serde)
        ok = True
        return result
    finally:
        r.close()
        if not ok:
            import shutil

            shutil.rmtree(target, ignore_errors=True)
            if existed:
                os.makedirs(target, exist_ok=True)


def _require_threads(refs: dict[str, Oid], threads: Sequence[str] | None, missing) -> None:
    if not threads:
        return
    have = {_thread_of_ref(ref) for ref in refs}
    for t in threads:
        if names.encode_ref_component(t) not in have:
            raise NotFoundError(missing(t))


def _pull_line(repo: GitRepo, name: str, theirs: Oid) -> RefResult:
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
            return RefResult(
                name,
                FORKED,
                None,
                str(theirs),
                target=fork,
                detail=f"both sides added checkpoints; the remote's line is {_short(fork)}",
            )
        if _contains(repo, theirs, held):
            if not repo.update_ref(fork, held, theirs):
                return None
            return RefResult(
                name,
                FORKED,
                str(held),
                str(theirs),
                target=fork,
                detail=f"both sides added checkpoints; the remote's line is {_short(fork)}",
            )
        return RefResult(
            name,
            DIVERGED,
            str(mine),
            str(mine),
            target=fork,
            detail=f"{_short(fork)} already holds another line; nothing changed",
        )

    return retry_cas(attempt, f"pull of {_short(name)}")


def _hex(oid: Oid | None) -> str | None:
    return None if oid is None else str(oid)


# -- the store branch: fast-forward or a three-way merge --------------------------------


def _pull_store(repo: GitRepo, theirs: Oid, remote_name: str) -> RefResult:
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
        return RefResult(
            STORE_REF,
            MERGED,
            str(mine),
            str(merge),
            detail=f"both sides changed the store; {taken} item change(s) taken from the remote",
        )

    return retry_cas(attempt, "pull of the store")


# -- push ------------------------------------------------------------------------------


def push(
    repo: GitRepo | str | os.PathLike,
    remote: str | None = None,
    threads: Sequence[str] | None = None,
    store: bool = True,
) -> Result:
    """Send this repository's threads (all, or the ones named) and store branch.

    Never forced. Each ref is pushed when the remote lacks it or when it
    fast-forwards the remote's; a line that diverged from the remote's line of
    the same name is pushed as a fork line of the thread when the remote's
    line is already here (pulled), else it is rejected (pull first). A
    rejected ref makes ``Result.ok`` false.
    """
    r, owned = _open(repo)
    try:
        rem = Remote(r, remote, DEFAULT_REMOTE)
        result = Result("push", rem.name, rem.url)
        local = _select(_local_refs(r), threads, store)
        _require_threads(local, threads, lambda t: f"no thread {t!r} in {r.path}")
        theirs = rem.heads(_is_shared_ref)
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


def _plan_push(repo: GitRepo, name: str, mine: Oid, remote: dict[str, Oid]) -> tuple[RefResult, str | None]:
    """What to do with local ref ``name``: its result, and the remote ref to push it to."""
    theirs = remote.get(name)
    if name == STORE_REF:
        same_thread: dict[str, Oid] = {name: theirs} if theirs is not None else {}
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
    pulled = (
        name != STORE_REF
        and repo.has(theirs)
        and any(_contains(repo, tip, theirs) for tip in line_tips(repo, _thread_of_ref(name) or "").values())
    )
    if not pulled:
        what = "store" if name == STORE_REF else "line"
        return RefResult(
            name,
            REJECTED,
            str(theirs),
            str(theirs),
            detail=f"the remote's {what} has changes you do not have; pull first",
        ), None
    fork = fork_ref_for(repo, name, theirs, mine)
    held = remote.get(fork)
    if held is None:
        return RefResult(
            name, FORKED, None, str(mine), target=fork, detail=f"both sides added checkpoints; pushed as {_short(fork)}"
        ), fork
    if _contains(repo, mine, held):
        return RefResult(
            name,
            FORKED,
            str(held),
            str(mine),
            target=fork,
            detail=f"both sides added checkpoints; pushed as {_short(fork)}",
        ), fork
    return RefResult(
        name,
        REJECTED,
        str(theirs),
        str(theirs),
        target=fork,
        detail=f"the remote's {_short(fork)} has changes you do not have; pull first",
    ), None


def sync(
    repo: GitRepo | str | os.PathLike,
    remote: str | None = None,
    threads: Sequence[str] | None = None,
    store: bool = True,
    *,
    trust: bool = False,
    allow: Iterable[Any] = (),
    serde: Any = None,
) -> SyncResult:
    """:func:`pull` (checked the same way: ``trust``, ``allow``, ``serde``), then
    :func:`push`: afterwards both sides hold every checkpoint. Nothing is pushed
    when the pull raises :class:`UntrustedDataError`."""
    r, owned = _open(repo)
    try:
        pulled = pull(r, remote, threads, store, trust=trust, allow=allow, serde=serde)
        pushed = push(r, remote, threads, store)
        return SyncResult(pulled, pushed)
    finally:
        if owned:
            r.close()
