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


def test_the_fast_path_gives_what_the_escape_loop_gives():
    """encode_* skip the per-character loop when a regex finds nothing to escape:
    every character class must come out as the loop would make it."""
    chars = [chr(c) for c in range(0x250)] + ["é", "字", "\U0001f600", "\u2028"]
    for c in chars:
        for value in (c, f"a{c}b", c * 3, f"{c}.lock", f".{c}."):
            assert names.encode_tree_name(value) == _slow(value, lambda ch: ch not in names._TREE_UNSAFE), repr(value)
            assert names.encode_ref_component(value) == _slow(value, names._REF_SAFE.__contains__), repr(value)


def _slow(value: str, keep) -> str:
    if value == "":
        return "%e"
    enc = names._fix_edges(names._escape(value, keep))
    if keep is not names._REF_SAFE.__contains__ and enc.lower() == "git~1":
        enc = "%67" + enc[1:]
    return names._shorten(value, enc)
