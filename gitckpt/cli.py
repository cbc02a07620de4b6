"""The ``gitckpt`` command: audit, diff, fork, replay and maintain a repository.

A thin layer over the library: each command opens the repository, calls
:class:`~gitckpt.checkpoint.saver.GitSaver`, :class:`~gitckpt.store.GitStore` or
:mod:`gitckpt.ops`, and renders the result, as rich tables (80 columns) or,
with ``--json``, as JSON with stable keys. Library errors become one line,
``Error: ...`` on stderr, and exit status 1.

The repository is ``--repo PATH``, else ``$GITCKPT_REPO``, else ``./.gitckpt``
(if it exists, or if the folder has no ``langgraph.json`` naming gitckpt: then
the repository ``langgraph dev`` writes, see :mod:`gitckpt.langgraph_server`).
Store namespaces are written as labels joined by ``/`` (``memories/1``).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from . import __version__, ops
from .errors import GitckptError, InvalidInputError, NotFoundError

DEFAULT_REPO = ".gitckpt"
REPO_ENV = "GITCKPT_REPO"
SERDE_ENV = "GITCKPT_SERDE"
ALLOW_ENV = "GITCKPT_ALLOW"

# -- output -----------------------------------------------------------------------


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(file=sys.stderr if stderr else sys.stdout, highlight=False, soft_wrap=False, emoji=False)


def _table(*columns: str, **kwargs: Any):
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, **kwargs)
    for col in columns:
        name, _, style = col.partition("|")
        if style == "f":
            table.add_column(name, overflow="fold")
        elif style == "e":
            table.add_column(name, no_wrap=True, overflow="ellipsis")
        else:
            table.add_column(name, no_wrap=True, justify="right" if style == "r" else "left")
    return table


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _when(ts: int | float | None) -> str:
    if ts is None:
        return ""
    return _dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _short_when(ts: int | None) -> str:
    if ts is None:
        return ""
    when = _dt.datetime.fromtimestamp(ts)
    return when.strftime("%H:%M:%S" if when.date() == _dt.date.today() else "%Y-%m-%d")


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"


def _unmark(data: Any, marks: list[str]) -> Any:
    """``data`` with each not-constructed marker (trust.py) replaced by a token; its text in ``marks``."""
    if isinstance(data, dict):
        if ops.MARK in data and set(data) <= {ops.MARK, "data"}:
            marks.append(str(ops.marker_text(data)))
            return f"\x00{len(marks) - 1}\x00"
        return {k: _unmark(v, marks) for k, v in data.items()}
    if isinstance(data, list):
        return [_unmark(v, marks) for v in data]
    return data


def _oneline(data: Any, limit: int = 200) -> str:
    """A JSON value on one line, for people: a message as ``type: content``; a
    value that was not constructed as ``<not constructed: module.Name(data)>``."""
    marks: list[str] = []
    hidden = _marked_types({k: v for k, v in data.items() if k != "content"}) if _is_message(data) else []
    data = _unmark(data, marks)
    out = _oneline_plain(data)
    if hidden:  # a message is shown as its content: say what else it holds that was not constructed
        out += f" (also holds <not constructed: {', '.join(dict.fromkeys(hidden))}>)"
    for i, text in enumerate(marks):
        token = f"\x00{i}\x00"
        out = out.replace(json.dumps(token), text).replace(token, text)
    out = " ".join(out.split())
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _is_message(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("type"), str) and "content" in data


def _marked_types(data: Any) -> list[str]:
    """The type names of the not-constructed markers anywhere in ``data``."""
    if isinstance(data, dict):
        if ops.MARK in data and set(data) <= {ops.MARK, "data"}:
            return [str(data[ops.MARK]), *_marked_types(data.get("data"))]
        return [t for v in data.values() for t in _marked_types(v)]
    if isinstance(data, list):
        return [t for v in data for t in _marked_types(v)]
    return []


def _oneline_plain(data: Any) -> str:
    if _is_message(data):
        content = data["content"]
        text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
        calls = data.get("tool_calls") or []
        if calls:
            text += " [calls " + ", ".join(str(c.get("name")) for c in calls if isinstance(c, dict)) + "]"
        out = f"{data['type']}: {text}"
    elif isinstance(data, str):
        out = data
    else:
        out = json.dumps(data, ensure_ascii=False, default=str)
    return out


def _value_lines(data: Any) -> list[str]:
    if isinstance(data, list) and data and all(isinstance(x, dict) and "type" in x and "content" in x for x in data):
        return [_oneline(x) for x in data]
    return [_oneline(data, 400)]


# -- shared options ------------------------------------------------------------------


def repo_option(f):
    """``--repo PATH`` on every command (also accepted before the command)."""
    return click.option(
        "--repo",
        "repo",
        metavar="PATH",
        default=None,
        help=f"The repository (default: ${REPO_ENV}, else ./{DEFAULT_REPO}).",
    )(f)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (stable keys) instead of a table.")(f)


def ns_option(f):
    return click.option(
        "--ns",
        "ns",
        default="",
        metavar="NS",
        show_default=False,
        help="Checkpoint namespace of a subgraph, as LangGraph writes it (default: the root graph).",
    )(f)


def graph_option():
    def deco(f):
        return click.option(
            "--graph",
            "graph_spec",
            metavar="FILE.py:ATTR",
            default=None,
            help="Your graph: FILE.py:ATTR, module.name:ATTR, or a graph name from ./langgraph.json "
            "(default: the only graph langgraph.json names).",
        )(f)

    return deco


def _resolve_repo(repo: str | None) -> Path:
    ctx = click.get_current_context()
    root = ctx.find_root()
    value = repo or (root.params.get("repo") if root is not ctx else None) or os.environ.get(REPO_ENV)
    if not value and not Path(DEFAULT_REPO).exists():
        # a `langgraph dev` project using gitckpt: the repository its server writes
        from .langgraph_server import project_repo

        found = project_repo(Path.cwd())
        if found is not None:
            return found
    return Path(value or DEFAULT_REPO).expanduser().absolute()


class Session:
    """The repository a command works on, opened once, closed when it ends.

    Histories and thread lists come from the thread indexes alone
    (:class:`~gitckpt.checkpoint.index.ThreadIndexes`); the checkpointer, which imports
    LangGraph, is made only for a command that reads values or writes, so
    ``gitckpt log`` and ``gitckpt threads`` start in a fraction of the time.
    """

    def __init__(self, path: Path, create: bool = False, serde: Any = None, allow: tuple[str, ...] = ()) -> None:
        from .checkpoint.index import ThreadIndexes
        from .git.repo import GitRepo

        self.path = path
        self.repo = GitRepo(path, create=create)
        self.indexes = ThreadIndexes(self.repo)
        self._serde = serde
        self._allow = allow
        self._saver: Any = None  # a GitSaver, made when a command needs one (it imports LangGraph)
        self._store: Any = None

    @property
    def saver(self):
        """The repository's ``GitSaver``, sharing the session's thread indexes.

        It reads strictly (trust.py; format.md 16): only LangGraph's safe types,
        ``--allow`` and the repository's ``gitckpt.allow`` are constructed."""
        if self._saver is None:
            from .checkpoint.saver import GitSaver

            serde, strict = ops.reading_serde(self._serde, self._allow, self.repo)
            if not strict:
                click.echo(
                    f"Warning: --serde {type(serde).__name__} is not LangGraph's serializer; gitckpt cannot "
                    "make it strict, so it constructs whatever it is written to construct",
                    err=True,
                )
            self._saver = GitSaver(self.repo, serde=serde, indexes=self.indexes)  # one index a thread
        return self._saver

    @property
    def store(self):
        if self._store is None:
            from .store.store import GitStore

            self._store = GitStore(self.repo)
        return self._store

    def history(self, thread_id: str, **kwargs: Any) -> ops.ThreadHistory:
        return ops.thread_history(self.indexes, thread_id, **kwargs)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
        self.indexes.save()  # shared with the saver, if one was made
        self.repo.close()  # the session opened it, so the session closes it


def _display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it."""
    try:
        rel = path.relative_to(Path.cwd())
    except ValueError:
        return str(path)
    return str(rel) if str(rel) != "." else "."


def _serde() -> Any:
    """The serializer named by ``gitckpt --serde`` (or $GITCKPT_SERDE); None: LangGraph's default."""
    return ops.load_serializer(click.get_current_context().find_root().params.get("serde"))


def _allow() -> tuple[str, ...]:
    """The types ``gitckpt --allow module:Name`` (repeatable, or $GITCKPT_ALLOW) allows."""
    return tuple(click.get_current_context().find_root().params.get("allow") or ())


def _session(repo: str | None, create: bool = False) -> Session:
    ctx = click.get_current_context()
    session = Session(_resolve_repo(repo), create=create, serde=_serde(), allow=_allow())
    ctx.call_on_close(session.close)
    return session


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class GitckptGroup(click.Group):
    """Turns library errors into ``Error: ...`` (exit 1), never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from .git.repo import GitError

        try:
            return super().invoke(ctx)
        except GitckptError as exc:
            from .errors import ReplayMissError

            if isinstance(exc, ReplayMissError):  # keep its diff readable
                raise click.ClickException(f"offline replay: {exc}") from exc
            raise click.ClickException(_one_line(exc)) from exc
        except ValueError as exc:
            from langgraph.store.base import InvalidNamespaceError

            if isinstance(exc, InvalidNamespaceError):  # a store namespace LangGraph refuses
                raise click.ClickException(_one_line(exc)) from exc
            raise
        except GitError as exc:
            raise click.ClickException(f"git: {_one_line(exc)}") from exc
        except OSError as exc:
            raise click.ClickException(_one_line(exc)) from exc


def _graph_error(exc: BaseException) -> click.ClickException:
    from .errors import ReplayMissError

    if isinstance(exc, ReplayMissError):
        return click.ClickException(f"offline replay: {exc}")
    return click.ClickException(f"the graph failed: {type(exc).__name__}: {_one_line(exc)}")


# -- the group -------------------------------------------------------------------------

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(cls=GitckptGroup, context_settings=CONTEXT)
@click.option(
    "--repo",
    "repo",
    metavar="PATH",
    default=None,
    envvar=REPO_ENV,
    help=f"The repository for every command (default: ${REPO_ENV}, else ./{DEFAULT_REPO}).",
)
@click.option(
    "--serde",
    "serde",
    metavar="SPEC",
    default=None,
    envvar=SERDE_ENV,
    help="The serializer the checkpoints were written with: 'aes' (EncryptedSerializer, key in "
    f"$LANGGRAPH_AES_KEY) or FILE.py:ATTR / module:ATTR (default: ${SERDE_ENV}, else LangGraph's).",
)
@click.option(
    "--allow",
    "allow",
    metavar="MODULE:NAME",
    multiple=True,
    envvar=ALLOW_ENV,
    help="Also construct this type when reading values (repeatable; default: LangGraph's safe types "
    "and the repository's gitckpt.allow config). Any other type is shown as "
    "<not constructed: module.Name(...)>.",
)
@click.version_option(__version__, prog_name="gitckpt", message="%(prog)s %(version)s")
def cli(repo: str | None, serde: str | None, allow: tuple[str, ...]) -> None:
    """Audit, diff, fork and replay LangGraph runs stored in a git repository.

    Every thread is a branch and every checkpoint a commit, so plain git works
    too. Start with the demo, then look at what it stored:

    \b
        gitckpt demo
        gitckpt threads
        gitckpt log 1 --graph
        git --git-dir .gitckpt log --graph --all --oneline

    Store namespaces are written as labels joined by '/': memories/1 is
    ("memories", "1"); a label holding '/' or '%' is percent-encoded (%2F, %25).
    Checkpoints can be named by any unique prefix of their id.
    """


def main() -> None:
    """The console-script entry point."""
    cli(prog_name="gitckpt")


# -- init / threads ------------------------------------------------------------------------


@cli.command()
@repo_option
def init(repo: str | None) -> None:
    """Create the repository (a bare git repository).

    \b
    Example:
        gitckpt init --repo agent.git
        Initialized empty gitckpt repository in /home/me/agent.git
    """
    from .git.repo import open_repository

    path = _resolve_repo(repo)
    existed = (path / "HEAD").is_file() and (path / "objects").is_dir()
    r = open_repository(path, create=True)
    where = Path(r.path).resolve()
    click.echo(f"{'Reinitialized existing' if existed else 'Initialized empty'} gitckpt repository in {where}")


@cli.command()
@repo_option
@json_option
def threads(repo: str | None, as_json: bool) -> None:
    """List every thread: checkpoints, forks, last step, last update.

    \b
    Example:
        gitckpt threads
        gitckpt threads --json    # [{"thread_id": "1", "checkpoints": 8, ...}]
    """
    s = _session(repo)
    infos = [info for tid in s.indexes.threads() if (info := s.indexes.thread_info(tid)) is not None]
    if as_json:
        _echo_json(
            [
                {
                    "thread_id": i["thread_id"],
                    "checkpoints": i["checkpoints"],
                    "forks": i["forks"],
                    "namespaces": i["namespaces"],
                    "lines": [ops.short_ref(r) for r in i["lines"]],
                    "latest_checkpoint_id": i["latest_checkpoint_id"],
                    "last_step": i["last_step"],
                    "last_update": i["last_update"],
                }
                for i in infos
            ]
        )
        return
    if not infos:
        click.echo(f"No threads in {s.path}.")
        return
    table = _table("Thread|f", "Checkpoints|r", "Forks|r", "Last step|r", "Last update", "Latest")
    for i in infos:
        table.add_row(
            i["thread_id"],
            str(i["checkpoints"]),
            str(i["forks"]),
            "" if i["last_step"] is None else str(i["last_step"]),
            _when(i["last_update"])[:16],
            (i["latest_checkpoint_id"] or "")[:13],
        )
    _console().print(table)


# -- log / show / diff ------------------------------------------------------------------


@cli.command()
@click.argument("thread")
@ns_option
@click.option(
    "-n",
    "--max-count",
    "limit",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Show at most N checkpoints.",
)
@click.option("--graph", "draw", is_flag=True, help="Draw the lines of history: where forks branch off.")
@repo_option
@json_option
def log(thread: str, ns: str, limit: int | None, draw: bool, repo: str | None, as_json: bool) -> None:
    """Show a thread's checkpoints, newest first.

    Each row: checkpoint id (any unique prefix names it elsewhere), step,
    source (input, loop, update, fork), which nodes wrote which channels to
    make it, and when. The newest checkpoint of each line is marked (main)
    or (fork).

    \b
    Examples:
        gitckpt log 1
        gitckpt log 1 --graph -n 10
        gitckpt log 1 --json      # [{"checkpoint_id", "step", "source", "parent_checkpoint_id", ...}]
    """
    s = _session(repo)
    hist = s.history(thread)
    ns = ops.resolve_namespace(hist, ns)
    rows = hist.checkpoints(ns)
    if as_json:
        shown = rows[:limit] if limit else rows
        _echo_json([r.to_json() for r in shown])
        return
    short = ops.short_ids([r.checkpoint_id for r in rows])
    entries = ops.graph_lanes(rows) if draw else [("", r) for r in rows]
    cols = (["|"] if draw else []) + ["Checkpoint", "Step|r", "Source", "Time", "What happened"]
    table = _table(*cols)
    if draw:
        table.columns[0].header = ""
    cells_of: list[list[str]] = []
    count = 0
    for drawing, row in entries:
        if row is None:
            cells_of.append([drawing, "", "", "", "", ""])
            continue
        if limit is not None and count >= limit:
            break
        count += 1
        tips = sorted({"fork" if "/forks/" in ref or "@" in ref.rsplit("/", 1)[-1] else "main" for ref in row.lines})
        summary = row.summary
        if row.source == "fork" and row.parent_checkpoint_id and summary.startswith("fork of"):
            summary = f"fork of {short.get(row.parent_checkpoint_id, row.parent_checkpoint_id[:13])}"
        ncalls = row.call_count
        if ncalls:
            summary += f" · {ncalls} call{'s' if ncalls != 1 else ''} recorded"
        what = (f"({', '.join(tips)}) " if tips else "") + summary
        cells = [
            short[row.checkpoint_id],
            "" if row.step is None else str(row.step),
            row.source or "",
            _short_when(row.time),
            what,
        ]
        cells_of.append([*([drawing] if draw else []), *cells])
    # one line per checkpoint, so the drawing stays whole: the last column is cut to fit
    console = _console()
    fixed = [max([len(c.header)] + [len(r[i]) for r in cells_of]) for i, c in enumerate(table.columns[:-1])]
    room = max(12, console.width - sum(fixed) - 3 * len(fixed))
    for cells in cells_of:
        last = cells[-1]
        table.add_row(*cells[:-1], last if len(last) <= room else last[: room - 1] + "…")
    title = f"thread {thread}" + (f" · namespace {ns}" if ns else "") + f" · {len(rows)} checkpoint(s)"
    others = [n for n in hist.namespaces() if n != ns and n]
    console.print(title, markup=False)
    if others and not ns:
        console.print(f"subgraph namespaces (--ns): {', '.join(others)}", markup=False)
    console.print(table)


@cli.command()
@click.argument("thread")
@click.argument("checkpoint", required=False)
@ns_option
@graph_option()
@repo_option
@json_option
def show(thread: str, checkpoint: str | None, ns: str, graph_spec: str | None, repo: str | None, as_json: bool) -> None:
    """Show the state at a checkpoint (default: the thread's latest).

    Values, next nodes, tasks (with their interrupts), metadata, config,
    parent config and pending writes. Without --graph, next and tasks are
    worked out from the checkpoint; with it they are LangGraph's own.

    \b
    Examples:
        gitckpt show 1
        gitckpt show 1 1f1e5968-cb35 --json
        gitckpt show 1 --graph gitckpt/demo.py:graph
    """
    s = _session(repo)
    hist = s.history(thread)
    ns = ops.resolve_namespace(hist, ns)
    row = ops.resolve_checkpoint(hist, checkpoint, ns)
    graph = ops.load_graph(graph_spec, s.saver, s.store) if graph_spec else None
    snap = ops.snapshot(s.saver, hist, row, graph)
    snap.pop("raw_values")
    if as_json:
        _echo_json(snap)
        return
    console = _console()
    console.print(f"thread {thread}" + (f" · namespace {ns}" if ns else "") + f" · checkpoint {row.checkpoint_id}")
    md = snap["metadata"]
    console.print(f"step {md.get('step')} · {md.get('source')} · {snap['created_at']}")
    parent = (snap["parent_config"] or {}).get("configurable", {}).get("checkpoint_id")
    console.print(f"parent: {parent or '(none)'}")
    console.print()
    values = _table("Channel", "Value|f", title="Values", title_justify="left")
    for ch, value in snap["values"].items():
        lines = _value_lines(value)
        values.add_row(ch, "\n".join(lines))
    if not snap["values"]:
        values.add_row("(empty)", "")
    console.print(values)
    nxt = ", ".join(snap["next"]) or "(none: the run is complete)"
    console.print(
        f"Next: {nxt}"
        + (" (derived from the checkpoint; --graph asks LangGraph)" if snap["next_derived"] and snap["next"] else "")
    )
    if snap["tasks"]:
        tasks = _table("Task", "Node", "Interrupts / error|f", title="Tasks", title_justify="left")
        for t in snap["tasks"]:
            note = "; ".join(_oneline(i.get("value", i) if isinstance(i, dict) else i) for i in t["interrupts"])
            if t.get("error"):
                note = (note + "; " if note else "") + f"error: {_oneline(t['error'])}"
            tasks.add_row((t["id"] or "")[:13], t["name"] or "?", note)
        console.print(tasks)
    if snap["pending_writes"]:
        pw = _table("Task", "Channel", "Value|f", title="Pending writes", title_justify="left")
        for w in snap["pending_writes"]:
            value = w["value"]
            if w["channel"] == "__interrupt__" and isinstance(value, list):
                text = "; ".join(_oneline(i.get("value") if isinstance(i, dict) else i) for i in value)
            else:
                text = "; ".join(_value_lines(value))
            pw.add_row(w["task_id"][:13], w["channel"], text[:240])
        console.print(pw)
    if snap["calls"]:
        calls = _table("Step", "Node", "Call", "Asked / answered|f", title="Recorded calls", title_justify="left")
        for c in snap["calls"]:
            asked = "" if c["kind"] == "model" else json.dumps(c.get("args"), ensure_ascii=False, default=str)
            text = (asked + " → " if asked else "") + (c.get("summary") or "")
            calls.add_row(
                "" if c["step"] is None else str(c["step"]),
                str(c["node"] or "?"),
                f"{c['kind']} {c['name']}" + (" (replayed)" if c.get("replayed") else ""),
                text[:240],
            )
        console.print(calls)
    console.print(f"Metadata: {json.dumps(md, ensure_ascii=False, default=str)}")
    console.print(f"Config: {json.dumps(snap['config'], ensure_ascii=False)}")
    console.print(f"Parent config: {json.dumps(snap['parent_config'], ensure_ascii=False)}")


def _values_at(s: Session, thread: str, ns: str, cid: str) -> dict[str, Any]:
    tup = s.saver.get_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": cid}})
    if tup is None:
        raise NotFoundError(f"thread {thread!r} has no checkpoint {cid!r}")
    return tup.checkpoint.get("channel_values", {})


@cli.command()
@click.argument("thread")
@click.argument("from_", metavar="[FROM]", required=False)
@click.argument("to", metavar="[TO]", required=False)
@ns_option
@repo_option
@json_option
def diff(thread: str, from_: str | None, to: str | None, ns: str, repo: str | None, as_json: bool) -> None:
    """Show per-channel differences between two checkpoints.

    With no checkpoint: the latest against its parent. With FROM: FROM
    against the latest. With FROM and TO: FROM against TO. For lists (a
    chat's messages) the items removed and added are shown.

    \b
    Examples:
        gitckpt diff 1
        gitckpt diff 1 1f1e5968-cb35 1f1e5968-cc30
        gitckpt diff 1 --json     # {"from", "to", "channels": [{"channel", "change", ...}]}
    """
    s = _session(repo)
    hist = s.history(thread)
    ns = ops.resolve_namespace(hist, ns)
    if from_ is None:
        new = ops.resolve_checkpoint(hist, None, ns)
        pid = new.parent_checkpoint_id
        old = hist.rows.get((ns, pid)) if pid else None
    else:
        old = ops.resolve_checkpoint(hist, from_, ns)
        new = ops.resolve_checkpoint(hist, to, ns)
    before = _values_at(s, thread, ns, old.checkpoint_id) if old else {}
    after = _values_at(s, thread, ns, new.checkpoint_id)
    changes = ops.diff_channels(before, after)

    def side(r: ops.CheckpointRow | None) -> dict | None:
        return None if r is None else {"checkpoint_id": r.checkpoint_id, "step": r.step, "source": r.source}

    if as_json:
        _echo_json({"thread_id": thread, "checkpoint_ns": ns, "from": side(old), "to": side(new), "channels": changes})
        return
    console = _console()
    short = ops.short_ids([r.checkpoint_id for r in hist.checkpoints(ns)])
    a = f"{short[old.checkpoint_id]} (step {old.step})" if old else "(empty: no parent)"
    console.print(f"thread {thread}: {a} → {short[new.checkpoint_id]} (step {new.step})")
    if not changes:
        console.print("No differences.")
        return
    for c in changes:
        ch = c["channel"]
        if c["change"] == "added":
            _print_items(console, "+", ch, c["after"])
        elif c["change"] == "removed":
            _print_items(console, "-", ch, c["before"])
        elif "added" in c:
            n_add, n_rm = len(c["added"]), len(c["removed"])
            parts = ([f"+{n_add}"] if n_add else []) + ([f"-{n_rm}"] if n_rm else [])
            console.print(f"~ {ch}: {len(c['before'])} → {len(c['after'])} items ({', '.join(parts)})", markup=False)
            for item in c["removed"]:
                console.print(f"    - {_oneline(item)}", markup=False)
            for item in c["added"]:
                console.print(f"    + {_oneline(item)}", markup=False)
        else:
            console.print(f"~ {ch}: {_oneline(c['before'], 80)} → {_oneline(c['after'], 80)}", markup=False)


def _print_items(console: Any, sign: str, ch: str, value: Any) -> None:
    lines = _value_lines(value)
    if len(lines) == 1 and not isinstance(value, list):
        console.print(f"{sign} {ch}: {lines[0]}", markup=False)
        return
    console.print(f"{sign} {ch}:", markup=False)
    for line in lines if isinstance(value, list) and len(lines) > 1 else [_oneline(v) for v in (value or [])] or lines:
        console.print(f"    {sign} {line}", markup=False)


# -- fork / replay / update -------------------------------------------------------------


@cli.command()
@click.argument("thread")
@click.argument("checkpoint")
@click.option("--to", "new_thread", required=True, metavar="NEW_THREAD", help="The id of the new thread.")
@ns_option
@repo_option
def fork(thread: str, checkpoint: str, new_thread: str, ns: str, repo: str | None) -> None:
    """Start a new thread at a checkpoint of THREAD.

    No data is copied and THREAD is not touched: the new thread's branch
    starts at that checkpoint's commit, with its pending writes.

    \b
    Example:
        gitckpt fork 1 1f1e5968-cb35 --to 1-retry
        gitckpt replay 1-retry --graph agent.py:graph
    """
    s = _session(repo)
    hist = s.history(thread)
    ns = ops.resolve_namespace(hist, ns)
    row = ops.resolve_checkpoint(hist, checkpoint, ns)
    s.saver.fork(thread, row.checkpoint_id, new_thread, ns)
    click.echo(f"Forked thread {thread} at checkpoint {row.checkpoint_id} (step {row.step}) as thread {new_thread}.")


_LANGGRAPH_KEYS = {
    "source",
    "step",
    "parents",
    "writes",
    "run_id",
    "thread_id",
    "checkpoint_ns",
    "checkpoint_id",
    "checkpoint_map",
    "task_id",
    "thread_ts",
    "user_agent",
    "graph_id",
    "assistant_id",
}


def _run_config(s: Session, thread: str, ns: str, row: ops.CheckpointRow | None, extra: str | None) -> dict[str, Any]:
    """The configurable values a run needs: those the original run recorded in
    the checkpoint's metadata (e.g. ``user_id``; for a checkpoint made by
    update_state or a replay, its nearest ancestor's), then ``--config``."""
    configurable: dict[str, Any] = {}
    hist = s.history(thread) if row is not None else None
    for _ in range(100):  # an update or fork checkpoint records none: look at its ancestors
        if row is None:
            break
        tup = s.saver.get_tuple(
            {"configurable": {"thread_id": thread, "checkpoint_ns": ns, "checkpoint_id": row.checkpoint_id}}
        )
        for k, v in ((tup.metadata if tup else None) or {}).items():
            if (
                k not in _LANGGRAPH_KEYS
                and not k.startswith(("langgraph_", "__", "ls_"))
                and isinstance(v, (str, int, float, bool))
            ):
                configurable[k] = v
        if configurable or not row.parent_checkpoint_id or hist is None:
            break
        row = hist.rows.get((ns, row.parent_checkpoint_id))
    if extra:
        more = ops.parse_json(extra, "--config")
        if not isinstance(more, dict):
            raise InvalidInputError('--config must be a JSON object of configurable values, e.g. \'{"user_id": "1"}\'')
        configurable.update(more)
    configurable["thread_id"] = thread
    if ns:
        configurable["checkpoint_ns"] = ns
    return {"configurable": configurable}


def _stream(graph: Any, inp: Any, config: dict, as_json: bool) -> tuple[int, bool]:
    """Run the graph, printing each node's update; returns (updates, interrupted)."""
    count = 0
    interrupted = False
    try:
        for chunk in graph.stream(inp, config, stream_mode="updates"):
            # LangGraph marks updates it took from writes saved with the checkpoint
            cached = bool((chunk.get("__metadata__") or {}).get("cached"))
            for node, update in chunk.items():
                if node == "__metadata__":
                    continue
                count += 1
                interrupted = interrupted or node == "__interrupt__"
                data = ops.jsonable(update)
                if as_json:
                    event = {
                        "event": "interrupt" if node == "__interrupt__" else "update",
                        "node": node,
                        "update": data,
                    }
                    if cached:
                        event["cached"] = True
                    click.echo(json.dumps(event, ensure_ascii=False, default=str))
                    continue
                if cached:
                    node = f"{node} (saved writes)"
                if node == "__interrupt__":
                    for intr in data or []:
                        value = intr.get("value") if isinstance(intr, dict) else intr
                        click.echo(f"⏸ interrupted: {_oneline(value)}")
                    continue
                if not isinstance(data, dict) or not data:
                    click.echo(f"{node}: {_oneline(data)}")
                    continue
                for ch, value in data.items():
                    for i, line in enumerate(_value_lines(value)):
                        head = f"{node} → {ch}: " if i == 0 else " " * len(f"{node} → {ch}: ")
                        click.echo(head + line)
    except GitckptError:
        raise
    except Exception as exc:
        raise _graph_error(exc) from exc
    return count, interrupted


def _report_end(s: Session, thread: str, ns: str, as_json: bool) -> None:
    hist = s.history(thread)
    row = ops.resolve_checkpoint(hist, None, ns)
    line = next((ops.short_ref(r) for r in row.lines), None)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "event": "done",
                    "thread_id": thread,
                    "checkpoint_id": row.checkpoint_id,
                    "step": row.step,
                    "source": row.source,
                    "line": line,
                },
                ensure_ascii=False,
            )
        )
    else:
        click.echo(
            f"thread {thread} is now at checkpoint {row.checkpoint_id} (step {row.step}, {row.source})"
            + (f" on {line}" if line else "")
        )


@cli.command()
@click.argument("thread")
@click.argument("checkpoint", required=False)
@graph_option()
@click.option(
    "--input",
    "input_json",
    metavar="JSON",
    default=None,
    help="Input for the run (JSON); default none: re-run from the checkpoint.",
)
@click.option(
    "--resume",
    "resume_json",
    metavar="JSON",
    default=None,
    help="Answer a pending interrupt: runs Command(resume=<JSON>).",
)
@click.option(
    "--to",
    "new_thread",
    metavar="NEW_THREAD",
    default=None,
    help="Fork to a new thread first and run there; THREAD is left as it is.",
)
@click.option(
    "--config",
    "config_json",
    metavar="JSON",
    default=None,
    help="Configurable values for the run (JSON object); default: those the checkpoint recorded.",
)
@click.option(
    "--offline",
    is_flag=True,
    help="Answer every model and tool call from THREAD's recording (GitSaver(record=True)): "
    "no model is contacted and no tool runs.",
)
@click.option(
    "--on-miss",
    "on_miss",
    type=click.Choice(["error", "live"]),
    default="error",
    show_default=True,
    help="With --offline, a call the recording cannot answer: fail, or make it for real (and record it).",
)
@ns_option
@repo_option
@json_option
def replay(
    thread: str,
    checkpoint: str | None,
    graph_spec: str | None,
    input_json: str | None,
    resume_json: str | None,
    new_thread: str | None,
    config_json: str | None,
    offline: bool,
    on_miss: str,
    ns: str,
    repo: str | None,
    as_json: bool,
) -> None:
    """Run your graph again from a checkpoint, streaming node updates.

    From an older checkpoint, LangGraph re-runs the nodes after it and the
    new checkpoints start a fork (a new branch in the thread). With --to the
    run happens on a new thread forked at the checkpoint. Configurable values
    the original run recorded (e.g. user_id) are passed again.

    --resume answers a pending interrupt. With CHECKPOINT (or --to) the run
    first replays from that checkpoint up to its interrupt, then answers, so
    an old question can be answered differently on a fork.

    \b
    Examples:
        gitckpt replay 1 1f1e5968-cb35 --graph agent.py:graph
        gitckpt replay 1 --graph agent.py:graph --input '{"messages": [{"role": "user", "content": "hi"}]}'
        gitckpt replay 1 --graph agent.py:graph --resume '"yes"'
        gitckpt replay 1 1f1e5968-cbd8 --to 1-no --graph agent.py:graph --resume '"no"'
        gitckpt replay 1 1f1e5968-cb35 --to 1-retry     # graph from ./langgraph.json
        gitckpt replay 1 1f1e5968-cb35 --to 1-b --graph agent.py:graph --offline
    """
    import contextlib

    from langgraph.types import Command

    if input_json is not None and resume_json is not None:
        raise InvalidInputError("pass either --input or --resume, not both")
    inp: Any = None
    if input_json is not None:
        inp = ops.parse_json(input_json, "--input")
    elif resume_json is not None:
        inp = Command(resume=ops.parse_json(resume_json, "--resume"))
    s = _session(repo)
    hist = s.history(thread)
    ns = ops.resolve_namespace(hist, ns)
    row = ops.resolve_checkpoint(hist, checkpoint, ns)
    graph = ops.load_graph(graph_spec, s.saver, s.store)
    config = _run_config(s, thread, ns, row, config_json)
    target = thread
    if new_thread is not None:
        s.saver.fork(thread, row.checkpoint_id, new_thread, ns)
        target = new_thread
        config["configurable"]["thread_id"] = new_thread
        if not as_json:
            click.echo(f"Forked thread {thread} at {row.checkpoint_id} as thread {new_thread}.")
    if checkpoint is not None or new_thread is not None:
        config["configurable"]["checkpoint_id"] = row.checkpoint_id
    if not as_json:
        shown = {
            k: v for k, v in config["configurable"].items() if k not in ("thread_id", "checkpoint_ns", "checkpoint_id")
        }
        click.echo(
            f"Running thread {target} from checkpoint {row.checkpoint_id} (step {row.step})"
            + (f" with {json.dumps(shown, ensure_ascii=False)}" if shown else "")
        )
    if on_miss != "error" and not offline:
        raise InvalidInputError("--on-miss applies to --offline replays")
    replaying = s.saver.replaying(thread, on_miss=on_miss) if offline else contextlib.nullcontext()
    with replaying as rep:
        _replay_runs(s, graph, inp, config, row, resume_json, as_json, target, ns)
    if rep is not None and not as_json:
        click.echo(
            f"Offline: {rep.answered['model']} model call(s) and {rep.answered['tool']} tool call(s) "
            f"answered from the recording of thread {thread}; "
            f"{rep.live['model']} model and {rep.live['tool']} tool call(s) made live."
        )


def _replay_runs(
    s: Session,
    graph: Any,
    inp: Any,
    config: dict,
    row: Any,
    resume_json: str | None,
    as_json: bool,
    target: str,
    ns: str,
) -> None:
    if resume_json is not None and "checkpoint_id" in config["configurable"]:
        # LangGraph would reuse the writes saved with that checkpoint (an answer
        # given before); replay up to the interrupt, then give the new answer
        count, interrupted = _stream(graph, None, config, as_json)
        del config["configurable"]["checkpoint_id"]
        if not interrupted:
            raise InvalidInputError(
                f"replaying from {row.checkpoint_id} did not stop at an interrupt: --resume has nothing to answer"
            )
        if not as_json:
            click.echo(f"Resuming with {resume_json}")
    count, _ = _stream(graph, inp, config, as_json)
    if not count and not as_json:
        click.echo(
            f"Nothing ran: checkpoint {row.checkpoint_id} has no next node; pass --input to start a "
            "new turn (or --resume to answer an interrupt)."
        )
    _report_end(s, target, ns, as_json)


@cli.command()
@click.argument("thread")
@graph_option()
@click.option(
    "--keep", is_flag=True, help="Keep the scratch thread (and store branch) the runs were made on (names printed)."
)
@click.option(
    "--config",
    "config_json",
    metavar="JSON",
    default=None,
    help="Configurable values for the runs (JSON object); default: those the thread recorded.",
)
@ns_option
@repo_option
@json_option
def reproduce(
    thread: str, graph_spec: str | None, keep: bool, config_json: str | None, ns: str, repo: str | None, as_json: bool
) -> None:
    """Check your graph against a recorded thread, offline.

    Runs every input, resume and update_state that THREAD saw again, in order,
    on a scratch thread, with each model and tool call answered from THREAD's
    recording (GitSaver(record=True)): no model is contacted, no tool runs. Each
    new checkpoint is compared with the recorded one (next nodes, channel
    values, pending writes; generated ids and timestamps are not differences).
    Subgraph checkpoints are compared too, namespace by namespace (task ids in
    namespaces differ between runs: they are matched by node, step and task
    path); --ns NS compares only that namespace (and those nested in it).
    The runs use a scratch store, never the real one: a branch that starts as
    the store was when THREAD began, deleted afterwards (kept with --keep).
    Exit status 0 and one line when everything matches; 1 and the first
    divergence (step, node, namespace, channel or call, and a diff) when not.

    \b
    Examples:
        gitckpt reproduce 1 --graph agent.py:graph
        gitckpt reproduce 1 --graph agent.py:graph --ns child    # one subgraph
        gitckpt reproduce 1 --graph agent.py:graph --json     # for CI
    """
    from .reproduce import reproduce as run_reproduce

    s = _session(repo)
    hist = s.history(thread)
    ns = ops.resolve_namespace(hist, ns)
    if not any(hist.writes.calls(key) for key in hist.writes) and not as_json:  # names only, nothing read
        click.echo(f"note: thread {thread} has no recorded calls (was it run with GitSaver(record=True)?)", err=True)
    graph = ops.load_graph(graph_spec, s.saver, s.store)
    base = _run_config(s, thread, "", hist.checkpoints("")[-1] if hist.checkpoints("") else None, config_json)
    base["configurable"].pop("thread_id", None)
    result = run_reproduce(s.saver, graph, thread, keep=keep, configurable=base["configurable"], ns=ns or None)
    if as_json:
        _echo_json(result.as_dict())
    else:
        click.echo(result.summary())
        d = result.divergence
        if d is not None:
            if d.name and d.what in ("channel", "writes"):
                click.echo(f"  {d.what}: {d.name}")
            if d.recorded_checkpoint:
                click.echo(f"  recorded checkpoint: {d.recorded_checkpoint}")
            if d.diff:
                click.echo(d.diff)
        if keep:
            click.echo(f"kept the scratch thread {result.scratch_thread}")
            if result.scratch_store and result.scratch_store != "memory":
                click.echo(f"kept the scratch store branch {result.scratch_store}")
    if not result.ok:
        raise SystemExit(1)


@cli.command()
@click.argument("thread")
@click.option(
    "--values",
    "values_json",
    metavar="JSON",
    required=True,
    help="The update, a JSON object of channel values (reducers apply, as in update_state).",
)
@click.option(
    "--as-node",
    "as_node",
    metavar="NODE",
    default=None,
    help="Apply the update as if NODE wrote it (decides what runs next).",
)
@click.option(
    "--checkpoint",
    "checkpoint",
    metavar="ID",
    default=None,
    help="Update this checkpoint instead of the latest: starts a fork.",
)
@graph_option()
@ns_option
@repo_option
@json_option
def update(
    thread: str,
    values_json: str,
    as_node: str | None,
    checkpoint: str | None,
    graph_spec: str | None,
    ns: str,
    repo: str | None,
    as_json: bool,
) -> None:
    """Update a thread's state, as graph.update_state() does.

    The update goes through the graph's reducers (a message list is
    appended to) and makes a new checkpoint with source "update".

    \b
    Examples:
        gitckpt update 1 --graph agent.py:graph --values '{"messages": [{"role": "user", "content": "hi"}]}'
        gitckpt update 1 --graph agent.py:graph --values '{"n": 3}' --as-node a --checkpoint 1f1e5968-cb35
    """
    values = ops.parse_json(values_json, "--values")
    if not isinstance(values, dict):
        raise InvalidInputError("--values must be a JSON object of channel values, e.g. '{\"n\": 3}'")
    s = _session(repo)
    hist = s.history(thread)
    ns = ops.resolve_namespace(hist, ns)
    row = ops.resolve_checkpoint(hist, checkpoint, ns)
    graph = ops.load_graph(graph_spec, s.saver, s.store)
    config = _run_config(s, thread, ns, row, None)
    if checkpoint is not None:
        config["configurable"]["checkpoint_id"] = row.checkpoint_id
    try:
        new = graph.update_state(config, values, as_node=as_node)
    except GitckptError:
        raise
    except Exception as exc:
        raise click.ClickException(f"update_state failed: {type(exc).__name__}: {_one_line(exc)}") from exc
    cid = new["configurable"]["checkpoint_id"]
    new_row = ops.resolve_checkpoint(s.history(thread), cid, ns)
    if as_json:
        _echo_json(
            {
                "thread_id": thread,
                "checkpoint_id": cid,
                "parent_checkpoint_id": row.checkpoint_id,
                "step": new_row.step,
                "source": new_row.source,
            }
        )
        return
    click.echo(
        f"Updated thread {thread}: checkpoint {cid} (step {new_row.step}, {new_row.source}), "
        f"parent {row.checkpoint_id}."
    )


# -- copy / delete / prune ------------------------------------------------------------------


def _require_thread(s: Session, thread: str) -> dict:
    info = s.indexes.thread_info(thread)
    if info is None:
        raise NotFoundError(f"no thread {thread!r} in {s.path} (see `gitckpt threads`)")
    return info


@cli.command()
@click.argument("src")
@click.argument("dst")
@repo_option
def copy(src: str, dst: str, repo: str | None) -> None:
    """Copy thread SRC to a new thread DST (new branches, no data copied).

    \b
    Example:
        gitckpt copy 1 1-backup
    """
    s = _session(repo)
    info = _require_thread(s, src)
    s.saver.copy_thread(src, dst)
    click.echo(f"Copied thread {src} ({info['checkpoints']} checkpoints) to thread {dst}.")


@cli.command()
@click.argument("thread")
@repo_option
def delete(thread: str, repo: str | None) -> None:
    """Delete a thread: its branches go; `gitckpt gc` reclaims the space (after
    gc.pruneExpire, or at once with --prune-now).

    \b
    Example:
        gitckpt delete 1-backup
    """
    s = _session(repo)
    info = _require_thread(s, thread)
    tips = s.history(thread).tips
    s.saver.delete_thread(thread)
    click.echo(f"Deleted thread {thread} ({info['checkpoints']} checkpoints, {len(tips)} branch(es)).")
    for ref, tip in sorted(tips.items()):
        click.echo(f"  was {ops.short_ref(ref)} at {tip[:12]}")


@cli.command()
@click.argument("threads_", metavar="THREAD...", nargs=-1, required=True)
@click.option(
    "--keep-latest",
    "strategy",
    flag_value="keep_latest",
    default=True,
    help="Keep only the latest checkpoint of each namespace (default).",
)
@click.option("--all", "strategy", flag_value="delete", help="Delete the threads entirely.")
@repo_option
def prune(threads_: tuple[str, ...], strategy: str, repo: str | None) -> None:
    """Drop old checkpoints of threads (or the threads, with --all).

    --keep-latest keeps each namespace's latest checkpoint and its pending
    writes as the new start of the thread; forks go. `gitckpt gc` reclaims
    the space once nothing refers to the old objects.

    \b
    Examples:
        gitckpt prune 1 2 --keep-latest
        gitckpt prune 3 --all
    """
    s = _session(repo)
    before = {t: _require_thread(s, t)["checkpoints"] for t in threads_}
    s.saver.prune(list(threads_), strategy=strategy)
    for t in threads_:
        if strategy == "delete":
            click.echo(f"Deleted thread {t} ({before[t]} checkpoints).")
        else:
            after = (s.saver.thread_info(t) or {}).get("checkpoints", 0)
            click.echo(f"Pruned thread {t}: {before[t]} → {after} checkpoint(s).")


# -- gc / verify -----------------------------------------------------------------------------


class _Bar:
    """A rich progress bar on stderr, fed by an ``ops`` progress callback."""

    def __init__(self, label: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.progress = Progress(
            TextColumn("{task.description:<24}"),
            BarColumn(),
            MofNCompleteColumn(),
            console=_console(stderr=True),
            transient=False,
        )
        self.task = self.progress.add_task(label, total=None)

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def __call__(self, done: int, total: int, what: str) -> None:
        self.progress.update(self.task, completed=done, total=total, description=what[:24])


@cli.command()
@click.option(
    "--prune-now",
    "prune_now",
    is_flag=True,
    help="Delete unreachable objects at once, not after gc.pruneExpire. Only while nothing writes.",
)
@repo_option
@json_option
def gc(prune_now: bool, repo: str | None, as_json: bool) -> None:
    """Pack and compact the repository; prints its disk use before and after.

    The sizes are what `du -s` reports: bytes allocated on disk. Safe while
    agents write to it: objects nothing refers to any more (deleted or pruned
    history) are kept for gc.pruneExpire (git's setting, two weeks by default),
    since an agent may have written them a moment ago, in one compressed
    cruft pack; the first gc after that frees them. --prune-now frees them at
    once: run it only while no other process writes to the repository.
    With more than 64 packs, gitckpt's own small packs are first merged by
    copying (thousands of packs would exhaust git's memory maps).

    \b
    Examples:
        gitckpt gc
        Disk use (du -s): 1.2 MB → 310.4 kB
        gitckpt gc --prune-now     # every agent stopped
    """
    from .git.repo import open_repository

    path = _resolve_repo(repo)
    open_repository(path, create=False)  # a clear error before the progress bar
    if as_json:
        _echo_json(ops.gc(path, prune_now=prune_now))
        return
    with _Bar("gc") as bar:
        result = ops.gc(path, progress=bar, prune_now=prune_now)
    if result["packs_merged"]:
        click.echo(f"Merged {result['packs_merged']} small packs into {result['packs_made']} before git's repack.")
    click.echo(f"Disk use (du -s): {_size(result['before'])} → {_size(result['after'])}")
    if result["kept"] and result["kept_until"]:
        click.echo(
            f"Kept {_size(result['kept'])} of unreachable objects (deleted or pruned history, or written "
            f"a moment ago) for gc.pruneExpire={result['expire']}: a gc after {_when(result['kept_until'])} "
            "frees them; `gitckpt gc --prune-now` frees them now (stop every writer first)."
        )


@cli.command()
@repo_option
@json_option
def verify(repo: str | None, as_json: bool) -> None:
    """Check that every checkpoint, pending write and store item decodes and
    every history is intact. Exits with status 1 and names each problem.

    \b
    Example:
        gitckpt verify
        OK: 3 threads, 19 checkpoints, 1 store item(s), no problems.
    """
    path = _resolve_repo(repo)
    from .git.repo import open_repository

    open_repository(path, create=False)  # a clear error before the progress bar
    serde = _serde()
    if as_json:
        problems = ops.verify(path, serde=serde, allow=_allow())
    else:
        with _Bar("verify") as bar:
            problems = ops.verify(path, progress=bar, serde=serde, allow=_allow())
    if as_json:
        _echo_json({"ok": not problems, "problems": problems})
        if problems:
            sys.exit(1)
        return
    if problems:
        for p in problems:
            click.echo(f"✗ {p}")
        raise click.ClickException(f"{len(problems)} problem(s) found in {path}")
    s = _session(repo)
    tids = s.indexes.threads()
    n = sum((s.indexes.thread_info(t) or {}).get("checkpoints", 0) for t in tids)
    click.echo(f"OK: {len(tids)} thread(s), {n} checkpoint(s), no problems.")


# -- watch -------------------------------------------------------------------------------------


@cli.command()
@click.argument("thread", required=False)
@repo_option
@json_option
def watch(thread: str | None, repo: str | None, as_json: bool) -> None:
    """Print checkpoints as other processes write them, until Ctrl-C.

    Watches the repository's refs for changes (inotify/FSEvents through
    watchdog; no polling loop). With THREAD, only that thread. Each line:
    time, thread, step, source, checkpoint id (first 13 characters; --json
    has the whole id) and what happened.

    \b
    Examples:
        gitckpt watch
        gitckpt watch 1 --json    # one JSON object per line
    """
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer

    s = _session(repo)
    feed = ops.CheckpointFeed(s.indexes, thread)
    changed = threading.Event()

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: Any) -> None:
            paths = [str(event.src_path), str(getattr(event, "dest_path", "") or "")]
            if any(p and not p.endswith(".lock") for p in paths):
                changed.set()

    refs_dir = s.path / "refs"
    refs_dir.mkdir(exist_ok=True)
    observer = Observer()
    observer.schedule(Handler(), str(refs_dir), recursive=True)
    observer.schedule(Handler(), str(s.path), recursive=False)  # packed-refs
    observer.start()
    click.echo(
        f"Watching {s.path}" + (f" thread {thread}" if thread else "") + " for new checkpoints (Ctrl-C to stop)",
        err=True,
    )
    try:
        while True:
            changed.wait()
            time.sleep(0.02)  # let a burst of ref updates settle
            changed.clear()
            for tid, row in feed.new_checkpoints():
                if as_json:
                    click.echo(json.dumps({"thread_id": tid, **row.to_json()}, ensure_ascii=False))
                else:
                    step = "" if row.step is None else f"step {row.step:>3}"
                    ns = f" ns {row.checkpoint_ns}" if row.checkpoint_ns else ""
                    click.echo(
                        f"{_short_when(row.time)}  thread {tid}{ns}  {step}  {row.source or '':<6}  "
                        f"{row.checkpoint_id[:13]}  {row.summary}".rstrip()
                    )
                sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    finally:
        observer.stop()
        observer.join()


# -- push / pull / sync ---------------------------------------------------------------------


def _sync_outcome(action: str, r: Any) -> str:
    """One ref's result for people, on one line."""
    from . import sync

    if r.status == sync.FORKED:
        where = ops.short_ref(r.target)
        return f"pushed as {where}" if action == "push" else f"diverged, remote's line kept as {where}"
    if r.status in (sync.REJECTED, sync.DIVERGED):
        return f"{r.status}: {r.detail}"
    if r.status == sync.PUSHED:
        return f"pushed ({r.detail})"
    if r.status == sync.MERGED:
        return f"merged: {r.detail.rpartition('; ')[2]}"
    return r.status


def _sync_table(result: Any, verb: str) -> None:
    where = "to" if result.action == "push" else "from"
    label = result.remote if result.remote == result.url else f"{result.remote} ({result.url})"
    shown = result.changed
    same = len(result.refs) - len(shown)
    if not shown:
        what = f"{same} branch(es) already up to date" if same else "no threads or store on either side"
        click.echo(f"Nothing to {result.action} {where} {label}: {what}.")
        return
    click.echo(f"{verb} {where} {label}:")
    table = _table("Branch|f", "Result|f")
    for r in shown:
        table.add_row(ops.short_ref(r.ref), _sync_outcome(result.action, r))
    _console().print(table)
    if same:
        click.echo(f"{same} other branch(es) already up to date.")


def _sync_failure(result: Any) -> None:
    bad = result.failed
    if not bad:
        return
    if result.action == "push":
        raise click.ClickException(
            f"{len(bad)} ref(s) rejected by {result.remote}: pull first (`gitckpt pull {result.remote}`)"
        )
    raise click.ClickException(f"{len(bad)} ref(s) could not be pulled from {result.remote}; see the table above")


def remote_and_threads(f):
    """REMOTE [THREAD]..., --repo and --json: the arguments push and pull share."""
    for decorate in reversed(
        (
            click.argument("remote", required=False),
            click.argument("threads_", metavar="[THREAD]...", nargs=-1),
            repo_option,
            json_option,
        )
    ):
        f = decorate(f)
    return f


def trust_option(f):
    return click.option(
        "--trust",
        "trust",
        is_flag=True,
        help="Take what the remote sent even if it names types outside the allowlist "
        "(reading it with LangGraph's default serializer would construct them).",
    )(f)


def _untrusted(exc: Any, as_json: bool) -> click.ClickException:
    """An UntrustedDataError as the report (stderr, or JSON on stdout) and exit status 1."""
    if as_json:
        _echo_json({"ok": False, "error": "untrusted", "scan": exc.report.to_dict()})
    else:
        for line in str(exc).splitlines():
            click.echo(line, err=True)
    return click.ClickException(
        "nothing was pulled: the remote's values name types outside the allowlist "
        "(see above); allow them, or pass --trust"
    )


def _trusted_note(result: Any) -> None:
    scan = getattr(result, "scan", None)
    if scan is not None and not scan.ok:
        click.echo(
            f"Warning: --trust took {len(scan.findings)} value(s) naming types outside the allowlist "
            f"({', '.join(scan.types())}); gitckpt shows them as <not constructed: ...>, LangGraph's "
            "default serializer would construct them",
            err=True,
        )


def _run_sync(
    action: str, remote: str | None, threads_: tuple[str, ...], repo: str | None, as_json: bool, trust: bool = False
) -> None:
    from . import sync
    from .errors import UntrustedDataError

    path = _resolve_repo(repo)
    names = list(threads_) or None
    check = {"trust": trust, "allow": _allow(), "serde": _serde()}
    try:
        if action == "sync":
            both = sync.sync(path, remote, names, store=names is None, **check)
            results = [both.pull, both.push]
            if as_json:
                _echo_json(both.to_dict())
        else:
            if action == "push":
                results = [sync.push(path, remote, names, store=names is None)]
            else:
                results = [sync.pull(path, remote, names, store=names is None, **check)]
            if as_json:
                _echo_json(results[0].to_dict())
    except UntrustedDataError as exc:
        raise _untrusted(exc, as_json) from exc
    if not as_json:
        for result in results:
            _sync_table(result, "Pushed" if result.action == "push" else "Pulled")
    for result in results:
        _trusted_note(result)
    for result in results:
        _sync_failure(result)


@cli.command()
@remote_and_threads
def push(remote: str | None, threads_: tuple[str, ...], repo: str | None, as_json: bool) -> None:
    """Send threads and the store to a remote; never forced.

    REMOTE is a remote configured in the repository (default: origin) or a URL
    (git://, ssh://, https://, file:// or a path). With THREADs (after REMOTE),
    only those threads; otherwise every thread and the store. A branch the
    remote changed in a way this repository has not seen is rejected (exit
    status 1): pull first. A thread both sides continued is sent as a fork
    line of that thread.

    \b
    Example:
        git --git-dir .gitckpt remote add origin git://server/team.git
        gitckpt push
        gitckpt push origin 1 user-42
    """
    _run_sync("push", remote, threads_, repo, as_json)


@cli.command()
@remote_and_threads
@trust_option
def pull(remote: str | None, threads_: tuple[str, ...], repo: str | None, as_json: bool, trust: bool) -> None:
    """Bring a remote's threads and store here; nothing local is rewritten.

    New branches are created and branches the remote moved forward are
    fast-forwarded. A thread both sides continued keeps the remote's line as a
    fork line (forks/THREAD/ID), and LangGraph continues from the newest
    checkpoint of either. A store both sides changed gets a merge commit (of an
    item changed on both sides, the later update wins). REMOTE and THREADs as
    for `push`.

    What the remote sent is checked first, without decoding it: if a value
    names a type outside LangGraph's safe types and the allowlist (--allow,
    `gitckpt allow`), or cannot be checked (pickled; encrypted, unless --serde
    aes gives the key), nothing is pulled and each thread and checkpoint is
    listed (exit status 1); --trust takes it anyway.

    \b
    Example:
        gitckpt pull
        gitckpt pull git://server/team.git 1
        gitckpt --allow myapp.state:Plan pull
    """
    _run_sync("pull", remote, threads_, repo, as_json, trust)


@cli.command("sync")
@click.argument("remote", required=False)
@repo_option
@json_option
@trust_option
def sync_(remote: str | None, repo: str | None, as_json: bool, trust: bool) -> None:
    """Pull, then push: afterwards both sides hold every checkpoint.

    The pull is checked as `gitckpt pull` checks it; when it refuses, nothing
    is pushed either.

    \b
    Example:
        gitckpt sync
        gitckpt sync origin --json
    """
    _run_sync("sync", remote, (), repo, as_json, trust)


@cli.command()
@click.argument("url")
@click.argument("path", required=False)
@repo_option
@json_option
@trust_option
def clone(url: str, path: str | None, repo: str | None, as_json: bool, trust: bool) -> None:
    """Make a new repository at PATH from the gitckpt repository at URL.

    A bare repository, configured like every gitckpt repository (`git log -p`
    shows decoded values), with URL as its remote origin, so `gitckpt pull`
    and `push` need no argument. PATH defaults to --repo, else the last part
    of URL (team.git). What comes in is checked as `gitckpt pull` checks it; when
    it is refused, no repository is left behind. Types given with the global
    --allow are recorded in the new repository's gitckpt.allow.

    \b
    Example:
        gitckpt clone git://server/team.git
        gitckpt --allow myapp.state:Plan clone git://server/team.git team.git
        gitckpt --repo team.git log 1
    """
    from . import sync
    from .errors import UntrustedDataError

    path = path or repo or click.get_current_context().find_root().params.get("repo")
    if path is None:
        tail = url.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1] or "repository"
        path = tail if tail.endswith(".git") else tail + ".git"
    target = Path(path).expanduser().absolute()
    try:
        result = sync.clone(url, target, trust=trust, allow=_allow(), serde=_serde())
    except UntrustedDataError as exc:
        raise _untrusted(exc, as_json) from exc
    if as_json:
        _echo_json({"path": str(target), **result.to_dict()})
    else:
        lines = [r for r in result.refs if r.ref.startswith(sync.HEADS + "threads/")]
        store_ = any(r.ref == sync.STORE_REF for r in result.refs)
        click.echo(
            f"Cloned {url} into {_display_path(target)}: {len(lines)} thread(s)"
            + (" and the store" if store_ else "")
            + "."
        )
    _trusted_note(result)
    _sync_failure(result)


@cli.command()
@click.argument("types", metavar="[MODULE:NAME]...", nargs=-1)
@click.option("--remove", is_flag=True, help="Remove the types given instead of adding them.")
@repo_option
@json_option
def allow(types: tuple[str, ...], remove: bool, repo: str | None, as_json: bool) -> None:
    """Allow your own state types to be constructed when this repository is read.

    gitckpt reads strictly: only LangGraph's safe types (messages, datetimes,
    UUIDs, Send, ...) and the types allowed here or with --allow are built;
    any other stored type is shown as <not constructed: module.Name(...)>, and
    a pull that brings one is refused unless --trust. The types are kept in the
    repository's git config (gitckpt.allow; `git config --add gitckpt.allow
    module:Name` does the same). Without arguments: list them.

    \b
    Examples:
        gitckpt allow myapp.state:Plan myapp.state:Step
        gitckpt allow
        gitckpt allow --remove myapp.state:Step
    """
    from . import trust

    s = _session(repo)
    if types:
        changed = (trust.remove_from_repo if remove else trust.add_to_repo)(s.repo, types)
    else:
        changed = []
    now = sorted(f"{m}:{n}" for m, n in trust.repo_allowlist(s.repo))
    if as_json:
        _echo_json({"allowed": now, "added" if not remove else "removed": changed})
        return
    if types:
        verb = "Removed" if remove else "Allowed"
        click.echo(f"{verb}: {', '.join(changed)}." if changed else "Nothing changed.")
    click.echo("Allowed types (gitckpt.allow): " + (", ".join(now) if now else "none (LangGraph's safe types only)"))


# -- store ---------------------------------------------------------------------------------------


@cli.group(cls=GitckptGroup)
def store() -> None:
    """Read and change the store (cross-thread memory) on the `store` branch.

    Namespaces are labels joined by '/': memories/1 is ("memories", "1").

    \b
    Examples:
        gitckpt store ls
        gitckpt store put memories/1 name '{"data": "my name is Bob"}'
        gitckpt store log memories/1
    """


def _ns_arg(text: str, allow_root: bool = False) -> tuple[str, ...]:
    ns = ops.parse_namespace(text)
    if not ns and not allow_root:
        raise InvalidInputError("a namespace is needed, e.g. memories/1")
    return ns


def _item_json(item: Any) -> dict[str, Any]:
    out = {
        "namespace": list(item.namespace),
        "key": item.key,
        "value": ops.jsonable(item.value),
        "created_at": item.created_at.isoformat() if item.created_at else None,
        "updated_at": item.updated_at.isoformat() if item.updated_at else None,
    }
    if getattr(item, "score", None) is not None:
        out["score"] = item.score
    return out


@store.command("ls")
@click.argument("prefix", required=False, default="")
@repo_option
@json_option
def store_ls(prefix: str, repo: str | None, as_json: bool) -> None:
    """List namespaces (under PREFIX) and how many items each holds.

    \b
    Examples:
        gitckpt store ls
        gitckpt store ls memories --json   # [{"namespace": "memories/1", "items": 1}]
    """
    s = _session(repo)
    pre = _ns_arg(prefix, allow_root=True)
    spaces = s.store.list_namespaces(prefix=pre or None, limit=100000)
    rows = []
    for ns in sorted(spaces):
        items = s.store.search(ns, limit=100000, refresh_ttl=False)
        rows.append(
            {
                "namespace": ops.format_namespace(ns),
                "labels": list(ns),
                "items": sum(1 for i in items if tuple(i.namespace) == tuple(ns)),
            }
        )
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo("No namespaces" + (f" under {prefix}" if pre else "") + ".")
        return
    table = _table("Namespace|f", "Items|r")
    for r in rows:
        table.add_row(r["namespace"], str(r["items"]))
    _console().print(table)


def _get_item(s: Session, ns: tuple[str, ...], key: str) -> Any:
    item = s.store.get(ns, key, refresh_ttl=False)
    if item is None:
        raise NotFoundError(f"no item {key!r} in namespace {ops.format_namespace(ns)}")
    return item


@store.command("get")
@click.argument("namespace")
@click.argument("key")
@repo_option
@json_option
def store_get(namespace: str, key: str, repo: str | None, as_json: bool) -> None:
    """Print an item's value (JSON); --json adds namespace, key and times.

    \b
    Example:
        gitckpt store get memories/1 name
    """
    s = _session(repo)
    item = _get_item(s, _ns_arg(namespace), key)
    if as_json:
        _echo_json(_item_json(item))
    else:
        _echo_json(ops.jsonable(item.value))


@store.command("put")
@click.argument("namespace")
@click.argument("key")
@click.argument("value")
@repo_option
def store_put(namespace: str, key: str, value: str, repo: str | None) -> None:
    """Store VALUE (a JSON object) under NAMESPACE and KEY.

    \b
    Example:
        gitckpt store put memories/1 name '{"data": "my name is Bob"}'
    """
    data = ops.parse_json(value, "VALUE")
    if not isinstance(data, dict):
        raise InvalidInputError('VALUE must be a JSON object, e.g. \'{"data": "my name is Bob"}\'')
    s = _session(repo)
    ns = _ns_arg(namespace)
    try:
        s.store.put(ns, key, data)
    except ValueError as exc:  # LangGraph's InvalidNamespaceError
        raise InvalidInputError(_one_line(exc)) from exc
    click.echo(f"Stored {key} in {ops.format_namespace(ns)}.")


@store.command("rm")
@click.argument("namespace")
@click.argument("key")
@repo_option
def store_rm(namespace: str, key: str, repo: str | None) -> None:
    """Delete the item KEY of NAMESPACE.

    \b
    Example:
        gitckpt store rm memories/1 name
    """
    s = _session(repo)
    ns = _ns_arg(namespace)
    _get_item(s, ns, key)
    s.store.delete(ns, key)
    click.echo(f"Deleted {key} from {ops.format_namespace(ns)}.")


@store.command("search")
@click.argument("namespace", required=False, default="")
@click.option("--query", metavar="TEXT", default=None, help="Rank by meaning (needs --embed).")
@click.option(
    "--embed",
    metavar="SPEC",
    default=None,
    help="Embeddings for --query: provider:model (LangChain), FILE.py:ATTR or module:ATTR.",
)
@click.option(
    "--filter",
    "filter_json",
    metavar="JSON",
    default=None,
    help='Match values, e.g. \'{"kind": "name"}\' or \'{"age": {"$gt": 30}}\'.',
)
@click.option(
    "-n", "--limit", "limit", type=click.IntRange(min=1), default=10, show_default=True, help="At most N items."
)
@repo_option
@json_option
def store_search(
    namespace: str,
    query: str | None,
    embed: str | None,
    filter_json: str | None,
    limit: int,
    repo: str | None,
    as_json: bool,
) -> None:
    """Search items under NAMESPACE (a prefix), by filter or by meaning.

    \b
    Examples:
        gitckpt store search memories
        gitckpt store search memories/1 --filter '{"data": "Hi! Remember: my name is Bob"}'
        gitckpt store search memories --query "user's name" --embed openai:text-embedding-3-small
    """
    flt = None
    if filter_json is not None:
        flt = ops.parse_json(filter_json, "--filter")
        if not isinstance(flt, dict):
            raise InvalidInputError('--filter must be a JSON object, e.g. \'{"kind": "name"}\'')
    if query is not None and embed is None:
        raise InvalidInputError(
            "--query needs an embedding model: add --embed provider:model (the one the items were indexed with)"
        )
    s = _session(repo)
    pre = _ns_arg(namespace, allow_root=True)
    st = s.store
    if embed is not None:
        from .store.store import GitStore

        emb = ops.load_embeddings(embed)
        try:
            from langgraph.store.base import ensure_embeddings

            emb_obj = ensure_embeddings(emb)
            dims = len(emb_obj.embed_query("dimension probe"))
        except GitckptError:
            raise
        except Exception as exc:
            raise InvalidInputError(f"--embed {embed}: {type(exc).__name__}: {_one_line(exc)}") from exc
        st = GitStore(s.repo, index={"embed": emb_obj, "dims": dims})
        click.get_current_context().call_on_close(st.close)
    try:
        found = st.search(pre, query=query, filter=flt, limit=limit, refresh_ttl=False)
    except GitckptError:
        raise
    except ValueError as exc:
        raise InvalidInputError(_one_line(exc)) from exc
    if as_json:
        _echo_json([_item_json(i) for i in found])
        return
    if not found:
        click.echo("No items found.")
        return
    cols = ["Namespace|f", "Key|f", "Value|f"] + (["Score|r"] if query else []) + ["Updated"]
    table = _table(*cols)
    for i in found:
        cells = [ops.format_namespace(i.namespace), i.key, _oneline(ops.jsonable(i.value), 120)]
        if query:
            cells.append("" if i.score is None else f"{i.score:.3f}")
        cells.append(i.updated_at.astimezone().strftime("%m-%d %H:%M:%S") if i.updated_at else "")
        table.add_row(*cells)
    _console().print(table)


@store.command("log")
@click.argument("namespace", required=False, default="")
@click.argument("key", required=False)
@click.option(
    "-n", "--max-count", "limit", type=click.IntRange(min=1), default=None, metavar="N", help="Show at most N changes."
)
@repo_option
@json_option
def store_log(namespace: str, key: str | None, limit: int | None, repo: str | None, as_json: bool) -> None:
    """Show how store items changed, newest first: puts (with the value
    written), deletes and expiries, from the history of the `store` branch.

    \b
    Examples:
        gitckpt store log
        gitckpt store log memories/1
        gitckpt store log memories/1 name --json
    """
    s = _session(repo)
    ns = _ns_arg(namespace, allow_root=True)
    entries = ops.store_history(s.repo, ns, key, limit=limit)
    if as_json:
        _echo_json(ops.jsonable(entries))
        return
    if not entries:
        click.echo("No changes" + (f" to {ops.format_namespace(ns)}" if ns else "") + (f" {key}" if key else "") + ".")
        return
    table = _table("Commit", "Time", "Change", "Namespace|f", "Key|f", "Value|f")
    for e in entries:
        table.add_row(
            e["commit"][:8],
            _short_when(e["time"]),
            e["change"],
            ops.format_namespace(e["namespace"]),
            e["key"],
            "" if e["value"] is None else _oneline(ops.jsonable(e["value"]), 100),
        )
    _console().print(table)


# -- server (langgraph dev) ------------------------------------------------------------------------


@cli.group(cls=GitckptGroup)
def server() -> None:
    """Use gitckpt as the checkpointer and store of `langgraph dev` (and Studio).

    \b
    Examples:
        gitckpt server init
        gitckpt server init --config path/to/langgraph.json
    """


@server.command("init")
@click.option(
    "--config",
    "config",
    metavar="PATH",
    default="langgraph.json",
    show_default=True,
    help="The project's langgraph.json (created if it does not exist).",
)
@click.option("--force", is_flag=True, help="Replace a checkpointer or store the file already names.")
@click.option(
    "--repo",
    "repo",
    metavar="PATH",
    default=None,
    help="Keep the threads in PATH: sets GITCKPT_REPO in the file's env (relative to the file's "
    "folder). Default: a folder outside the project, printed below.",
)
def server_init(config: str, force: bool, repo: str | None) -> None:
    """Add gitckpt's checkpointer and store to a project's langgraph.json.

    Every other key of the file is kept. The server then writes every thread
    to a git repository, by default outside the project folder (so its file
    watcher does not see git's writes), configured by environment variables: GITCKPT_REPO,
    GITCKPT_DURABILITY, GITCKPT_ALLOW, GITCKPT_SERDE, GITCKPT_RECORD (see
    docs/server.md). Run gitckpt from the project folder and it finds that
    repository.

    \b
    Examples:
        gitckpt server init && langgraph dev
        gitckpt threads
        gitckpt server init --repo ../runs.git
    """
    from .langgraph_server import CHECKPOINTER_PATH, STORE_PATH, init_config

    result = init_config(Path(config), force=force, repo=repo)
    shown = _display_path(Path(config).absolute())
    if result["created"]:
        click.echo(f"created {shown}: checkpointer {CHECKPOINTER_PATH}, store {STORE_PATH}")
        click.echo('add your graph to "graphs", e.g. "agent": "./graph.py:graph"')
    elif result["changed"]:
        names = {"checkpointer": CHECKPOINTER_PATH, "store": STORE_PATH, "env": f"{REPO_ENV}={repo}"}
        click.echo(f"updated {shown}: " + ", ".join(f"{key} {names[key]}" for key in result["changed"]))
    else:
        click.echo(f"{shown} already uses gitckpt's checkpointer and store")
    click.echo(f"repository: {result['repository']}")
    folder = Path(config).absolute().parent.resolve()
    if folder == result["repository"].resolve() or folder in result["repository"].resolve().parents:
        click.echo(
            "note: it is inside the project folder, which langgraph dev watches: every git write "
            "wakes its file watcher (unset GITCKPT_REPO or give a path outside to avoid it)"
        )
    click.echo("run `langgraph dev` here, then `gitckpt threads` in this folder to read what it stored")


# -- demo ------------------------------------------------------------------------------------------


@cli.command()
@click.option(
    "--model",
    "model_spec",
    metavar="PROVIDER:NAME",
    default=None,
    help="Use a real chat model through init_chat_model (e.g. openai:gpt-4o-mini); "
    "default: a built-in deterministic model, offline.",
)
@repo_option
def demo(model_spec: str | None, repo: str | None) -> None:
    """Run the cross-thread memory demo, offline, and show where it went.

    User 1 tells thread 1 "Hi! Remember: my name is Bob"; thread 2 (same
    user) knows the name, user 2 on thread 3 does not (memories live in the
    store under memories/<user>). Then the graph pauses for a human
    (interrupt) and resumes, and a replay from an old checkpoint forks thread
    1. It ends with the commands that show all of it.

    \b
    Examples:
        gitckpt demo
        gitckpt demo --repo /tmp/demo.git
        gitckpt demo --model openai:gpt-4o-mini
    """
    from . import demo as demo_mod

    model = demo_mod.load_model(model_spec) if model_spec else None
    path = _resolve_repo(repo)
    console = _console()
    console.print(
        f"gitckpt demo · repository {_display_path(path)}"
        + (f" · model {model_spec}" if model_spec else " · built-in offline model"),
        markup=False,
    )
    counter = [0]

    def emit(event: str, data: dict) -> None:
        if event == "section":
            counter[0] += 1
            console.print()
            console.print(f"[bold]{counter[0]}. {data['title']}[/bold]  (thread {data['thread']}, user {data['user']})")
        elif event == "human":
            console.print(f"   human: {data['text']}", markup=False)
        elif event == "ai":
            console.print(f"   ai:    {data['text']}", markup=False)
        elif event == "memory":
            ns = ops.format_namespace(data["namespace"])
            mems = data["memories"]
            console.print(
                f"   store {ns}: "
                + (", ".join(json.dumps(m, ensure_ascii=False) for m in mems) if mems else "(no memories)"),
                markup=False,
            )
        elif event == "interrupt":
            value = data["value"]
            question = value.get("question") if isinstance(value, dict) else value
            console.print(f"   ⏸ interrupt: {question}", markup=False)
        elif event == "resume":
            console.print(f"   ▶ a human answers: Command(resume={json.dumps(data['value'])})", markup=False)
        elif event == "paused":
            console.print(
                f"   paused at step {data['step']}, checkpoint {data['checkpoint'][:13]}…; "
                f"next: {', '.join(data['next'])}",
                markup=False,
            )
        elif event == "replay":
            console.print(
                f"   replaying from step {data['step']} (checkpoint {data['checkpoint'][:13]}…), "
                f"before {', '.join(data['next'])} ran",
                markup=False,
            )
        elif event == "fork":
            for ref in data["lines"]:
                console.print(f"   new branch: {ops.short_ref(ref)}", markup=False)
            console.print("   the main line (threads/1) is unchanged", markup=False)
        elif event == "reproduce":
            console.print(
                f"   {data['recorded']} model call(s) of thread 1 were recorded (GitSaver(record=True))", markup=False
            )
            console.print(f"   {data['summary']}", markup=False)
            console.print(
                f"   the model was called {data['model_calls']} time(s) during the reproduction", markup=False
            )

    try:
        summary = demo_mod.run(path, emit, model=model)
    except GitckptError:
        raise
    except Exception as exc:
        raise _graph_error(exc) from exc
    given = repo or click.get_current_context().find_root().params.get("repo")
    shown = _display_path(path)
    # with $GITCKPT_REPO or the default, later commands find the repository by themselves
    opt = f" --repo {shown}" if given and given != os.environ.get(REPO_ENV) else ""
    console.print()
    console.print("[bold]See what happened[/bold]")
    cmds = [
        (f"gitckpt threads{opt}", "the three threads"),
        (f"gitckpt log 1 --graph{opt}", "thread 1: both turns, the interrupt, the fork"),
        (f"gitckpt show 1 {summary['interrupt_checkpoint'][:13]}{opt}", "the paused checkpoint and its interrupt"),
        (f"gitckpt diff 1{opt}", "what the replayed step changed"),
        (f"gitckpt store log memories/1{opt}", "the memory: put, deleted, put again by the replay"),
        (
            f"gitckpt reproduce 3 --graph gitckpt.demo:graph{opt}",
            "check the graph against thread 3's recorded model calls, offline (exit 1 on a divergence)",
        ),
        (f"git --git-dir {shown} log --graph --all --oneline", "the same history, plain git"),
    ]
    for cmd, why in cmds:
        console.print(f"  {cmd}", markup=False)
        console.print(f"      # {why}", markup=False, style="dim")


if __name__ == "__main__":  # pragma: no cover
    main()
