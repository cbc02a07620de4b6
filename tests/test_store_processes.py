"""GitStore across real processes: concurrent writers lose nothing, and a new
process finds every item (and its vectors) without embedding anything again."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from gitckpt import GitStore

EMBEDDINGS = textwrap.dedent(
    """
    from langchain_core.embeddings import Embeddings

    class Letters(Embeddings):
        def __init__(self):
            self.documents = 0
            self.queries = 0

        def embed_documents(self, texts):
            self.documents += len(texts)
            return [self.vec(t) for t in texts]

        def embed_query(self, text):
            self.queries += 1
            return self.vec(text)

        @staticmethod
        def vec(t):
            return [float(t.lower().count(c)) for c in "abcdefghijklmnopqrstuvwxyz"] + [1.0]
    """
)

WRITER = EMBEDDINGS + textwrap.dedent(
    """
    import sys, time
    from langgraph.store.base import PutOp
    from gitckpt import GitStore

    path, me, n, start = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    while time.time() < start:  # all writers begin together
        time.sleep(0.001)
    store = GitStore(path, index={"dims": 27, "embed": Letters(), "fields": ["text"]})
    for i in range(n):
        if i % 4 == 3:  # some batches of two
            store.batch([PutOp(("shared",), f"p{me}-{i}", {"text": f"writer {me} item {i}", "me": me}),
                         PutOp(("own", str(me)), f"b{i}", {"text": "batch", "me": me})])
        else:
            store.put(("shared",), f"p{me}-{i}", {"text": f"writer {me} item {i}", "me": me})
        store.put(("counter",), "last", {"me": me, "i": i})  # everyone rewrites one item
    store.close()
    """
)


def run(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)


def test_concurrent_processes_lose_no_item(repo_path):
    import time

    writers, per_writer = 4, 24
    GitStore(repo_path).close()  # create the repository once
    start = time.time() + 1.5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(repo_path), str(me), str(per_writer), str(start)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for me in range(writers)
    ]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    with GitStore(repo_path) as store:
        shared = store.search(("shared",), limit=1000)
        assert sorted(i.key for i in shared) == sorted(
            f"p{me}-{i}" for me in range(writers) for i in range(per_writer)
        )
        for me in range(writers):
            assert len(store.search(("own", str(me)), limit=100)) == per_writer // 4
        assert store.get(("counter",), "last").value["i"] == per_writer - 1
    count = subprocess.run(
        ["git", "--git-dir", str(repo_path), "rev-list", "--count", "store"], capture_output=True, text=True, check=True
    )
    # each step is a put or a batch, then the counter: one commit each, none lost or merged
    assert int(count.stdout) == writers * 2 * per_writer
    subprocess.run(["git", "--git-dir", str(repo_path), "fsck", "--strict"], check=True, capture_output=True)


def test_new_process_finds_everything_without_reembedding(repo_path: Path):
    write = EMBEDDINGS + textwrap.dedent(
        """
        import sys, json
        from langgraph.store.base import PutOp
        from gitckpt import GitStore
        emb = Letters()
        with GitStore(sys.argv[1], index={"dims": 27, "embed": emb, "fields": ["text", "tags[*]"]}) as s:
            s.batch([PutOp(("docs", str(i % 3)), f"d{i}", {"text": f"document {i} " + "xyz" * (i % 5),
                                                          "tags": ["apple", f"t{i}"]}) for i in range(60)])
            s.put(("docs", "0"), "plain", {"text": "zzz"}, index=False)
        print(json.dumps({"documents": emb.documents}))
        """
    )
    read = EMBEDDINGS + textwrap.dedent(
        """
        import sys, json
        from gitckpt import GitStore
        emb = Letters()
        with GitStore(sys.argv[1], index={"dims": 27, "embed": emb, "fields": ["text", "tags[*]"]}) as s:
            found = s.search(("docs",), query="xyz xyz xyz xyz", limit=5)
            every = s.search(("docs",), limit=1000)
            s.put(("docs", "1"), "d1", {"text": "document 1 xyz", "tags": ["apple", "t1"], "v": 2})
        print(json.dumps({"documents": emb.documents, "queries": emb.queries, "count": len(every),
                          "top": [(r.key, r.score) for r in found]}))
        """
    )
    first = run(write, str(repo_path))
    assert first.returncode == 0, first.stderr
    # 60 texts, tags "t0".."t59", and "apple" once: each distinct text embedded once
    assert json.loads(first.stdout)["documents"] == 60 + 60 + 1
    second = run(read, str(repo_path))
    assert second.returncode == 0, second.stderr
    got = json.loads(second.stdout)
    assert got["documents"] == 0  # vectors came from git; the unchanged update reused them
    assert got["queries"] == 1
    assert got["count"] == 61
    # the five with the most "xyz", tied, in namespace then creation order
    assert [key for key, _ in got["top"]] == ["d9", "d24", "d39", "d54", "d4"]
    assert len({score for _, score in got["top"]}) == 1
