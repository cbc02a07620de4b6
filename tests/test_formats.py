"""The commit formats (gitckpt/checkpoint/format.py, gitckpt/store/format.py) and the
trailer syntax under both (gitckpt/git/trailers.py): pure functions, no repository."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gitckpt.checkpoint import format as fmt
from gitckpt.git import trailers
from gitckpt.store import format as store_fmt

_TEXT = st.text(max_size=30)
_ID = st.text(st.sampled_from("0123456789abcdef-"), min_size=1, max_size=36)


@given(_TEXT, _TEXT, _ID, st.none() | _ID, st.none() | st.integers(-1, 10**6), st.none() | _TEXT, st.none() | _ID)
@settings(max_examples=200)
def test_a_checkpoint_message_parses_back_to_what_was_written(thread, ns, cid, parent, step, source, run):
    message = fmt.checkpoint_message("step · loop", thread_id=thread, ns=ns, checkpoint_id=cid, parent_id=parent,
                                     step=step, source=source, run_id=run)
    meta = fmt.parse_commit(message)
    assert meta.is_checkpoint and meta.problem is None
    assert (meta.kind, meta.thread_id, meta.ns, meta.checkpoint_id) == (fmt.Kind.CHECKPOINT, thread, ns, cid)
    assert (meta.parent_id, meta.step, meta.run_id) == (parent, step, run)
    assert meta.source == source
    assert message.split("\n", 1)[0] == "step · loop"


@given(_TEXT, _TEXT, _ID, st.none() | _ID)
@settings(max_examples=100)
def test_a_writes_message_parses_back(thread, ns, cid, task):
    tree = "ab" * 20
    meta = fmt.parse_commit(fmt.writes_message("w", thread_id=thread, ns=ns, writes_for=cid, writes_tree=tree,
                                               task_id=task))
    assert (meta.kind, meta.problem, meta.writes_for, meta.writes_tree, meta.task_id) == (
        fmt.Kind.WRITES, None, cid, tree, task)
    assert not meta.is_checkpoint


def test_deletes_and_markers_parse_back():
    meta = fmt.parse_commit(fmt.delete_message("d", thread_id="t", deleted=[("", "a"), ("sub:1", "b")]))
    assert (meta.kind, meta.deleted) == (fmt.Kind.DELETE, (("", "a"), ("sub:1", "b")))
    meta = fmt.parse_commit(fmt.marker_message(fmt.Kind.FORK, "fork", thread_id="t", ns="n"))
    assert (meta.kind, meta.thread_id, meta.ns, meta.problem) == (fmt.Kind.FORK, "t", "n", None)


@pytest.mark.parametrize(("trailer_lines", "problem"), [
    (["Gitckpt: checkpoint", "Thread-Id: t", "Step: 1"], "has no Checkpoint-Id trailer"),
    (["Gitckpt: checkpoint", "Checkpoint-Id: c", "Step: one"], "has a bad Step trailer 'one'"),
    (["Gitckpt: writes", "Writes-For: c"], "is a writes commit with a missing or bad Writes-For / Writes-Tree trailer"),
    (["Gitckpt: writes", "Writes-For: c", "Writes-Tree: zz"], "is a writes commit with a missing"),
])
def test_malformed_commits_name_their_problem(trailer_lines, problem):
    meta = fmt.parse_commit("subject\n\n" + "\n".join(trailer_lines) + "\n")
    assert meta.problem is not None and meta.problem.startswith(problem)
    assert not meta.is_checkpoint


def test_commits_that_are_not_gitckpts_have_no_kind():
    for message in ("a commit made by hand\n", "subject\n\nGitckpt: something-new\n", ""):
        assert fmt.parse_commit(message).kind is None


@given(st.lists(st.tuples(st.text(max_size=20), st.text(max_size=40)), max_size=6))
@settings(max_examples=200)
def test_trailer_values_are_one_line_and_round_trip(pairs):
    keys = [f"Key-{i}" for i in range(len(pairs))]
    message = trailers.build_message("subject\nwith a newline", [(k, v) for k, (_, v) in zip(keys, pairs)])
    assert message.split("\n")[0] == "subject with a newline"
    parsed = trailers.parse_trailers(message)
    for k, (_, v) in zip(keys, pairs):
        assert parsed.get(k, "") == v


@given(st.lists(st.tuples(st.sampled_from([store_fmt.PUT, store_fmt.DELETE, store_fmt.REFRESH, store_fmt.EXPIRE]),
                          st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=3).map(tuple),
                          st.text(max_size=12)), max_size=8))
@settings(max_examples=150)
def test_a_store_commit_names_every_change_it_made(changes):
    message = store_fmt.commit_message(changes)
    assert "\n" not in message.split("\n\n")[0]
    assert sorted(store_fmt.parse_changes(message)) == sorted(changes)


@given(st.lists(st.text(min_size=1, max_size=10), min_size=1, max_size=4).map(tuple), st.text(max_size=20))
@settings(max_examples=150)
def test_store_item_paths_parse_back(namespace, key):
    path = "/".join(store_fmt.item_path(namespace, key))
    assert store_fmt.is_item_path(path)
    parsed = store_fmt.parse_item_path(path)
    assert parsed is None or parsed == (namespace, key)  # None: a name shortened with a hash


def test_a_trailer_value_with_nothing_to_escape_is_written_as_it_is():
    """esc's fast path: printable ASCII without '%' is kept, anything else quoted."""
    from gitckpt.git.trailers import esc, unesc

    for c in map(chr, range(0x180)):
        value = f"id{c}x"
        out = esc(value)
        assert unesc(out) == value
        assert "\n" not in out and "\r" not in out
        assert (out == value) == (c.isascii() and c.isprintable() and c != "%")
