"""gitckpt/git/packs.py: the packs and trees written by hand, checked against libgit2 and git."""

from __future__ import annotations

import subprocess

import pygit2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gitckpt.git import packs


@given(st.binary(max_size=200_000))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_stored_deflate_streams_inflate_to_their_data(data):
    import zlib

    from gitckpt.git.packs import _deflate

    assert zlib.decompress(_deflate(data)) == data


_TREE_NAMES = st.text(st.sampled_from("ab.-_0~é"), min_size=1, max_size=4).filter(lambda n: n not in (".", ".."))


@given(st.dictionaries(_TREE_NAMES, st.booleans(), min_size=1, max_size=12))
@settings(max_examples=60, deadline=None)
def test_tree_bytes_orders_entries_as_git_does(kinds):
    # names that are prefixes of each other ("a", "a.", "a-b"), some of them trees: git sorts a tree's
    # name as if it ended in "/", and libgit2's tree builder is the reference
    import tempfile

    from gitckpt.git.packs import tree_bytes

    repo = pygit2.init_repository(tempfile.mkdtemp(), bare=True)
    blob = repo.create_blob(b"x")
    sub = repo.TreeBuilder()
    sub.insert("x", blob, pygit2.GIT_FILEMODE_BLOB)
    subtree = sub.write()
    builder = repo.TreeBuilder()
    entries = {}
    for name, is_tree in kinds.items():
        oid, mode = (subtree, 0o040000) if is_tree else (blob, 0o100644)
        builder.insert(name, oid, mode)
        entries[name] = (oid.raw, mode)
    assert tree_bytes(entries) == repo[builder.write()].read_raw()


@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=20, unique=True))
@settings(max_examples=25, deadline=None)
def test_a_written_pack_is_read_back_by_libgit2_and_verified_by_git(blobs):
    import tempfile

    path = tempfile.mkdtemp()
    repo = pygit2.init_repository(path, bare=True)
    objects = [(packs.OBJ_BLOB, data, packs.object_id(packs.OBJ_BLOB, data)) for data in blobs]
    name, _, _ = packs.write_pack(f"{path}/objects/pack", objects)
    for data in blobs:
        oid = pygit2.Oid(raw=packs.object_id(packs.OBJ_BLOB, data))
        assert repo[oid].read_raw() == data
        assert oid == pygit2.hash(data)  # the id git gives the same bytes
    check = subprocess.run(["git", "verify-pack", f"{path}/objects/pack/{name}.idx"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


@given(st.dictionaries(st.text(st.sampled_from("abc.-_é"), min_size=1, max_size=5).filter(lambda n: n not in (".", "..")),
                       st.sampled_from([0o100644, 0o040000, 0o100755]), min_size=0, max_size=10))
@settings(max_examples=60, deadline=None)
def test_parse_tree_inverts_tree_bytes(modes):
    entries = {name: (packs.object_id(packs.OBJ_BLOB, name.encode()), mode) for name, mode in modes.items()}
    assert packs.parse_tree(packs.tree_bytes(entries)) == entries
