"""Graph shapes beyond the chat for scripts/bench.py (issue 14).

Each shape is a LangGraph graph plus the input of its k-th invoke, the same
for every saver. All invokes of one shape, API and durability go to one thread,
so a saver sees the thread grow the way an application's would.

- ``doc``: a 64 KB document rewritten a little (a 256-character slice) at each
  of 3 steps.
- ``fanout``: a planner ``Send``s 8 parallel workers, then a join sums them
  (each worker's result is a pending write: one ``put_writes`` per task).
- ``subgraph``: the parent's node invokes a compiled 2-node subgraph, which
  checkpoints in its own namespace with the parent's saver.
- ``chat_small``: a small state, 2 messages and a counter a turn.
"""

from __future__ import annotations

import random
from typing import Annotated, Any

from typing_extensions import TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.types import Send

import _bench_workloads as W

SHAPES = ("doc", "fanout", "subgraph", "chat_small")
APIS = ("invoke", "ainvoke")
DURABILITIES = ("sync", "async", "exit")

DOC_BYTES = 64 * 1024
_SLICE = 256


def _document() -> str:
    rnd = random.Random(64)
    words = W._WORDS
    out: list[str] = []
    n = 0
    while n < DOC_BYTES:
        w = words[rnd.randrange(len(words))]
        out.append(w)
        n += len(w) + 1
    return " ".join(out)[:DOC_BYTES]


_DOC = _document()

# -- doc -------------------------------------------------------------------------


class DocState(TypedDict, total=False):
    doc: str
    turn: int


def _edit(doc: str, turn: int, part: int) -> str:
    if not doc:
        doc = _DOC
    at = ((turn * 3 + part) * 7919 * _SLICE) % (len(doc) - _SLICE)
    return doc[:at] + W.text(turn * 3 + part + 70_000_000, _SLICE).ljust(_SLICE) + doc[at + _SLICE:]


def doc_graph(saver: Any, is_async: bool):
    b = StateGraph(DocState)
    for part in range(3):
        def node(state: DocState, part: int = part) -> dict:
            return {"doc": _edit(state.get("doc", ""), state["turn"], part)}
        b.add_node(f"edit{part}", node)
    b.add_edge(START, "edit0")
    b.add_edge("edit0", "edit1")
    b.add_edge("edit1", "edit2")
    b.add_edge("edit2", END)
    return b.compile(checkpointer=saver)


def doc_input(k: int) -> dict:
    return {"turn": k}


# -- fanout --------------------------------------------------------------------------


def _results(a: list | None, b: list | None) -> list:
    if b is None:  # the planner resets the list at every invoke
        return []
    return (a or []) + b


class FanState(TypedDict, total=False):
    turn: int
    results: Annotated[list, _results]
    total: int


WORKERS = 8


def fanout_graph(saver: Any, is_async: bool):
    def plan(state: FanState) -> dict:
        return {"results": None}

    def spread(state: FanState) -> list[Send]:
        return [Send("worker", {"turn": state["turn"], "i": i}) for i in range(WORKERS)]

    def worker(arg: dict) -> dict:
        return {"results": [W.text(arg["turn"] * WORKERS + arg["i"] + 80_000_000, 200).ljust(200)]}

    def join(state: FanState) -> dict:
        return {"total": sum(len(r) for r in state["results"])}

    b = StateGraph(FanState)
    b.add_node("plan", plan)
    b.add_node("worker", worker)
    b.add_node("join", join)
    b.add_edge(START, "plan")
    b.add_conditional_edges("plan", spread, ["worker"])
    b.add_edge("worker", "join")
    b.add_edge("join", END)
    return b.compile(checkpointer=saver)


def fanout_input(k: int) -> dict:
    return {"turn": k}


# -- subgraph ------------------------------------------------------------------------


class SubState(TypedDict):
    messages: Annotated[list, add_messages]


def _child():
    def s1(state: SubState) -> dict:
        return {"messages": [W.ai(90_000_000 + 2 * len(state["messages"]))]}

    def s2(state: SubState) -> dict:
        return {"messages": [W.ai(91_000_000 + 2 * len(state["messages"]))]}

    b = StateGraph(SubState)
    b.add_node("s1", s1)
    b.add_node("s2", s2)
    b.add_edge(START, "s1")
    b.add_edge("s1", "s2")
    b.add_edge("s2", END)
    return b.compile()  # inherits the parent's checkpointer


def subgraph_graph(saver: Any, is_async: bool):
    child = _child()

    def prep(state: SubState) -> dict:
        return {}

    if is_async:
        async def run_child(state: SubState) -> dict:
            out = await child.ainvoke({"messages": state["messages"]})
            return {"messages": out["messages"][len(state["messages"]):]}
    else:
        def run_child(state: SubState) -> dict:  # type: ignore[misc]
            out = child.invoke({"messages": state["messages"]})
            return {"messages": out["messages"][len(state["messages"]):]}

    b = StateGraph(SubState)
    b.add_node("prep", prep)
    b.add_node("child", run_child)
    b.add_edge(START, "prep")
    b.add_edge("prep", "child")
    b.add_edge("child", END)
    return b.compile(checkpointer=saver)


def subgraph_input(k: int) -> dict:
    return {"messages": [W.human(92_000_000 + k)]}


# -- chat_small ----------------------------------------------------------------------


class SmallState(TypedDict, total=False):
    messages: Annotated[list, add_messages]
    count: int


def chat_small_graph(saver: Any, is_async: bool):
    def reply(state: SmallState) -> dict:
        n = len(state["messages"])
        return {"messages": [W.ai(93_000_000 + n)], "count": state.get("count", 0) + 1}

    b = StateGraph(SmallState)
    b.add_node("reply", reply)
    b.add_edge(START, "reply")
    b.add_edge("reply", END)
    return b.compile(checkpointer=saver)


def chat_small_input(k: int) -> dict:
    return {"messages": [W.human(94_000_000 + k)]}


BUILD = {"doc": doc_graph, "fanout": fanout_graph, "subgraph": subgraph_graph, "chat_small": chat_small_graph}
INPUT = {"doc": doc_input, "fanout": fanout_input, "subgraph": subgraph_input, "chat_small": chat_small_input}

WHAT = {
    "doc": "a 64 KB document rewritten a little (a 256-character slice) at each of 3 steps",
    "fanout": f"a planner `Send`s {WORKERS} parallel workers (200 characters each), then a join",
    "subgraph": "a parent whose node invokes a 2-node subgraph (messages grow by 3 a turn)",
    "chat_small": "small state: 2 messages and a counter a turn (chat-like)",
}


def check(shape: str, out: dict, k: int) -> None:
    """The invoke's result is what the graph computes (every saver does identical work)."""
    if shape == "doc":
        assert len(out["doc"]) == DOC_BYTES and out["turn"] == k, shape
    elif shape == "fanout":
        assert len(out["results"]) == WORKERS and out["total"] == WORKERS * 200, (shape, out.get("total"))
    elif shape == "subgraph":
        assert len(out["messages"]) == 3 * (k + 1), (shape, len(out["messages"]), k)
    elif shape == "chat_small":
        assert len(out["messages"]) == 2 * (k + 1) and out["count"] == k + 1, shape
