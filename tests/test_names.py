"""gitckpt/git/names.py and the ref layout: pure functions, no repository."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitckpt.checkpoint import format as fmt
from gitckpt.git import names


@given(st.text(min_size=0, max_size=80))
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
def test_names_encode_to_valid_git_names_and_decode_back(value):
    ref = names.encode_ref_component(value)
    assert "/" not in ref and ".." not in ref and not ref.startswith(".") and not ref.endswith((".", ".lock"))
    assert not any(c in ref for c in " ~^:?*[\\\x7f") and all(ord(c) > 32 for c in ref)
    assert "@{" not in ref and ref != "@"
    assert names.decode(ref) == value or "%h" in ref
    tree = names.encode_tree_name(value)
    assert "/" not in tree and "\x00" not in tree and tree not in (".", "..", ".git")
    assert names.decode(tree) == value or "%h" in tree
    assert len(ref.encode()) <= names.MAX_COMPONENT + 42


def test_ordinary_ids_stay_readable():
    assert fmt.thread_ref("1") == "refs/heads/threads/1"
    assert fmt.thread_ref("user-42") == "refs/heads/threads/user-42"
    assert names.encode_tree_name("branch:to:node") == "branch:to:node"


@given(st.text(min_size=0, max_size=40), st.text(min_size=0, max_size=20), st.booleans())
@settings(max_examples=200)
def test_line_refs_parse_back_to_their_thread(thread_id, ns, fork):
    ref = fmt.line_ref(thread_id, ns, "1f0e" if fork else None)
    encoded, kind = fmt.parse_line_ref(ref)
    assert names.decode(encoded) == thread_id or "%h" in encoded
    assert kind == ("main" if ns == "" and not fork else "forks" if ns == "" else "subgraphs")
    assert ref.startswith(fmt.LINE_PREFIXES)


def test_refs_that_are_not_lines_are_not_parsed():
    for ref in ("refs/heads/store", "refs/heads/threads/a/b", "refs/tags/threads/1", "refs/heads/forks/1"):
        assert fmt.parse_line_ref(ref) is None
