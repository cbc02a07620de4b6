"""Merging two histories of the store branch (``gitckpt pull`` when both sides changed it).

Three-way, item by item: a change only one side made is taken; an item both
sides changed keeps the later update (``updated_at``, then ``expires_at``,
then the blob id, so every replica picks the same one); an item deleted on one
side and changed on the other is kept. Nothing is constructed from the
values: items are compared by their stored timestamps only.
"""

from __future__ import annotations

from ..errors import CorruptObjectError
from ..git.repo import BLOB, GitRepo, Oid
from .format import DELETE, PUT, commit_message, is_item_path, parse_iso, unpack_item


def _item_order(repo: GitRepo, oid: Oid) -> tuple:
    body = unpack_item(repo.read_blob(oid, "store item"), "store item")
    return (parse_iso(body.get("updated_at")) or 0, parse_iso(body.get("expires_at")) or 0, str(oid))


def _winner(repo: GitRepo, ours: Oid | None, theirs: Oid | None) -> Oid | None:
    """The item version a merge keeps when both sides changed it."""
    if ours is None or theirs is None:  # deleted on one side, changed on the other: keep it
        return ours if ours is not None else theirs
    return ours if _item_order(repo, ours) >= _item_order(repo, theirs) else theirs


def merge_store(repo: GitRepo, ours: Oid, theirs: Oid, remote_name: str) -> tuple[Oid, int]:
    """A merge commit (parents ``ours``, ``theirs``) of two store histories.

    Returns the commit (written, no ref moved) and how many item changes it
    took from ``theirs``. Its trailers name those changes (``Store-Put``,
    ``Store-Delete``), so ``gitckpt store log`` shows them at the merge.
    """
    base = repo.merge_base(ours, theirs)
    base_tree = repo.commit_info(base, "store commit").tree_id if base is not None else None
    our_tree = repo.commit_info(ours, "store commit").tree_id
    their_tree = repo.commit_info(theirs, "store commit").tree_id
    our_diff = {path: new for path, _old, new in repo.diff_trees(base_tree, our_tree)}
    changes: dict = {}
    log: list[tuple[str, tuple[str, ...], str]] = []
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
            blob = new if new is not None else old
            assert blob is not None  # a path in a diff is on one side at least
            body = unpack_item(repo.read_blob(blob, "store item"), f"store item {path}")
            kind = PUT if new is not None else DELETE
            log.append((kind, tuple(body["namespace"]), body["key"]))
        taken += 1
    tree = repo.update_tree(our_tree, changes) if changes else our_tree
    if tree is None:
        tree = repo.tree({})
    subject = f"merge store from {remote_name}" + (f": {taken} change(s)" if taken else "")
    return repo.commit(tree, [ours, theirs], commit_message(log, subject=subject)), taken
