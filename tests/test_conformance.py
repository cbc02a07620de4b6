"""LangGraph's checkpointer conformance suite, all 8 capabilities, against GitSaver."""

from __future__ import annotations

import tempfile

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from gitckpt import GitSaver


@checkpointer_test(name="GitSaver")
async def git_checkpointer():
    with tempfile.TemporaryDirectory() as d:
        saver = GitSaver(f"{d}/agent.git")
        yield saver
        saver.close()


async def test_conformance_all_capabilities():
    report = await validate(git_checkpointer)
    failures = {name: r.failures for name, r in report.results.items() if not r.passed}
    assert not failures, failures
    assert {name for name, r in report.results.items() if r.passed} == {c.value for c in ALL_CAPABILITIES}
