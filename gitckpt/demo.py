"""The demo graph and scenario behind ``gitckpt demo``.

The graph is LangGraph's cross-thread memory example (the "Bob" how-to):
one node, ``call_model``, reads the user's memories from the store under
``("memories", user_id)``, saves a new one when the user asks it to
remember something, and answers with a chat model. One more node,
``confirm_forget``, shows human-in-the-loop: asked to forget, the graph
pauses with ``interrupt()`` until a person answers with
``Command(resume="yes")`` or ``"no"``.

:class:`DemoChatModel` is a small deterministic chat model, so the demo runs
offline without an API key; ``gitckpt demo --model provider:name`` swaps in a
real one through ``init_chat_model``.

The module-level ``graph`` is compiled without a checkpointer or store:
``gitckpt replay`` and ``gitckpt update`` attach the repository's own, e.g.::

    gitckpt replay 1 --graph gitckpt/demo.py:graph --config '{"user_id": "1"}'

This module uses absolute imports only, so it also loads as a file path.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import RunnableConfig
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.store.base import BaseStore
from langgraph.types import Command, interrupt

from gitckpt.errors import InvalidInputError

#: Where the demo's memories live: ``("memories", user_id)``, as in the seed.
MEMORIES = "memories"
#: Memory keys are derived from the text, so replaying a step re-writes the same item.
_KEYS = uuid.UUID("6f1d1c58-3a4e-4f61-9d0b-5b0c1f0e2a77")

_NAME = re.compile(r"\bmy name is ([A-Z][\w'-]*)", re.IGNORECASE)


def _text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") if isinstance(part, dict) else str(part) for part in content)


class DemoChatModel(BaseChatModel):
    """A deterministic chat model: answers from the system prompt's user info.

    It knows three things: a greeting that names the user ("my name is X"),
    "what is my name?" (answered from the ``User info:`` of the system prompt,
    i.e. from the store), and anything else (echoed back).
    """

    #: How many times any demo model answered in this process (the demo shows that a
    #: reproduction answered from the recording leaves it unchanged).
    calls: ClassVar[int] = 0

    @property
    def _llm_type(self) -> str:
        return "gitckpt-demo"

    def _generate(
        self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any
    ) -> ChatResult:
        DemoChatModel.calls += 1
        system = " ".join(_text(m) for m in messages if isinstance(m, SystemMessage))
        info = system.partition("User info:")[2]
        last = next((m for m in reversed(messages) if isinstance(m, HumanMessage)), None)
        said = _text(last) if last is not None else ""
        told = _NAME.search(said)
        known = _NAME.search(info)
        if told and "remember" in said.lower():
            reply = f"Hello {told.group(1)}! I'll remember that your name is {told.group(1)}."
        elif told:
            reply = f"Nice to meet you, {told.group(1)}!"
        elif "name" in said.lower() and "?" in said:
            reply = (
                f"Your name is {known.group(1)}."
                if known
                else "I don't know your name yet. Tell me, and ask me to remember it."
            )
        else:
            reply = f"You said: {said}" if said else "Hello!"
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=reply))])


def _user(config: RunnableConfig) -> str:
    return str(config.get("configurable", {}).get("user_id", "default"))


def route(state: MessagesState) -> str:
    """``confirm_forget`` when the user asks to forget, else ``call_model``."""
    last = state["messages"][-1] if state["messages"] else None
    if isinstance(last, HumanMessage) and "forget" in _text(last).lower():
        return "confirm_forget"
    return "call_model"


def build_graph(model: BaseChatModel | None = None) -> StateGraph:
    """The uncompiled graph (a ``StateGraph`` builder) using ``model``."""
    model = model or DemoChatModel()

    def call_model(state: MessagesState, config: RunnableConfig, *, store: BaseStore) -> dict:
        namespace = (MEMORIES, _user(config))
        memories = store.search(namespace)
        info = "\n".join(str(m.value.get("data", "")) for m in memories)
        last = state["messages"][-1]
        text = _text(last)
        if isinstance(last, HumanMessage) and "remember" in text.lower():
            store.put(namespace, str(uuid.uuid5(_KEYS, text)), {"data": text})
        system = SystemMessage(f"You are a helpful assistant talking to the user. User info: {info}")
        return {"messages": [model.invoke([system, *state["messages"]])]}

    def confirm_forget(state: MessagesState, config: RunnableConfig, *, store: BaseStore) -> dict:
        user = _user(config)
        namespace = (MEMORIES, user)
        memories = store.search(namespace)
        answer = interrupt(
            {
                "question": f"Forget {len(memories)} memory(ies) of user {user}? (yes/no)",
                "memories": [m.value.get("data") for m in memories],
            }
        )
        if str(answer).strip().lower() in ("y", "yes", "true", "ok"):
            for m in memories:
                store.delete(namespace, m.key)
            reply = f"Done: I have forgotten {len(memories)} thing(s) you told me."
        else:
            reply = "All right, I will keep remembering."
        return {"messages": [AIMessage(content=reply)]}

    builder = StateGraph(MessagesState)
    builder.add_node("call_model", call_model)
    builder.add_node("confirm_forget", confirm_forget)
    builder.add_conditional_edges(START, route, ["call_model", "confirm_forget"])
    return builder


#: The demo graph, compiled without persistence (the CLI attaches a repository's).
graph = build_graph().compile()


def load_model(spec: str) -> BaseChatModel:
    """A real chat model from ``provider:name`` through ``init_chat_model``."""
    provider, sep, name = spec.partition(":")
    if not sep or not provider or not name:
        raise InvalidInputError(f"--model must look like provider:name (e.g. openai:gpt-4o-mini), not {spec!r}")
    try:
        from langchain.chat_models import init_chat_model
    except ImportError:
        raise InvalidInputError(
            f"--model {spec} needs LangChain's init_chat_model: pip install langchain langchain-{provider}"
        ) from None
    try:
        return init_chat_model(name, model_provider=provider)
    except Exception as exc:  # missing provider package, missing API key...
        raise InvalidInputError(f"cannot load chat model {spec!r}: {exc}") from exc


# -- the scenario -------------------------------------------------------------

DEMO_THREADS = ("1", "2", "3")


def run(repo_path: str | Path, emit: Callable[[str, dict], None], model: BaseChatModel | None = None) -> dict:
    """Run the demo scenario on the repository at ``repo_path``.

    ``emit(event, data)`` is called as things happen (the CLI prints them);
    events: ``section``, ``human``, ``ai``, ``interrupt``, ``paused``,
    ``resume``, ``memory``, ``replay``, ``fork``, ``reproduce``. Returns a summary with the ids
    the closing commands refer to. Raises :class:`GitckptError` if the
    repository already holds one of the demo's threads or memories.
    """
    from gitckpt import GitSaver
    from gitckpt.store import GitStore

    # every model call is recorded (docs/format.md, 18); strict: the demo stores only safe types
    saver = GitSaver(repo_path, record=True, allowed_msgpack_modules=())
    store = GitStore(saver.repo)
    try:
        taken = [t for t in DEMO_THREADS if saver.thread_info(t) is not None]
        if taken or store.list_namespaces(prefix=(MEMORIES,)):
            what = f"thread {taken[0]!r}" if taken else "memories"
            raise InvalidInputError(
                f"{saver.repo.path} already has {what}; run the demo on a new repository (--repo PATH)"
            )
        app = build_graph(model).compile(checkpointer=saver, store=store)
        summary: dict[str, Any] = {"repo": str(saver.repo.path)}

        def turn(
            thread: str, user: str, text: str | None, *, resume: Any = None, config: RunnableConfig | None = None
        ) -> list:
            cfg = config or {"configurable": {"thread_id": thread, "user_id": user}}
            if text is not None:
                emit("human", {"thread": thread, "text": text})
                inp: Any = {"messages": [HumanMessage(content=text)]}
            elif resume is not None:
                inp = Command(resume=resume)
            else:
                inp = None
            paused = []
            for chunk in app.stream(inp, cfg, stream_mode="updates"):
                for node, update in chunk.items():
                    if node == "__interrupt__":
                        paused.extend(update)
                        for intr in update:
                            emit("interrupt", {"thread": thread, "value": intr.value})
                        continue
                    for msg in (update or {}).get("messages", []):
                        if isinstance(msg, AIMessage):
                            emit("ai", {"thread": thread, "node": node, "text": _text(msg)})
            return paused

        def memories(user: str) -> list[str]:
            return [str(m.value.get("data")) for m in store.search((MEMORIES, user))]

        emit("section", {"title": "User 1 tells thread 1 their name", "thread": "1", "user": "1"})
        turn("1", "1", "Hi! Remember: my name is Bob")
        emit("memory", {"namespace": [MEMORIES, "1"], "memories": memories("1")})

        emit(
            "section",
            {
                "title": "Reproduce thread 1 offline: the model's answers come from the recording",
                "thread": "1",
                "user": "1",
            },
        )
        from gitckpt.reproduce import reproduce

        # the runs use a scratch branch of the store, as it was when each run began:
        # they read the same memories and leave the real store alone
        before = DemoChatModel.calls
        result = reproduce(saver, app, "1", configurable={"user_id": "1"})
        summary["reproduce"] = result.as_dict()
        summary["reproduce_model_calls"] = DemoChatModel.calls - before
        emit(
            "reproduce",
            {
                "thread": "1",
                "summary": result.summary(),
                "ok": result.ok,
                "model_calls": DemoChatModel.calls - before,
                "recorded": len(saver.recorded_calls("1")),
            },
        )

        emit("section", {"title": "User 1 starts thread 2: the memory crosses threads", "thread": "2", "user": "1"})
        turn("2", "1", "what is my name?")

        emit("section", {"title": "User 2 on thread 3: memories are per user", "thread": "3", "user": "2"})
        turn("3", "2", "what is my name?")
        emit("memory", {"namespace": [MEMORIES, "2"], "memories": memories("2")})

        emit("section", {"title": "Human in the loop: the graph pauses for approval", "thread": "1", "user": "1"})
        cfg1: RunnableConfig = {"configurable": {"thread_id": "1", "user_id": "1"}}
        paused = turn("1", "1", "Please forget my name.")
        state = app.get_state(cfg1)
        summary["interrupt_checkpoint"] = state.config["configurable"]["checkpoint_id"]
        summary["interrupt_step"] = (state.metadata or {}).get("step")
        emit(
            "paused",
            {
                "thread": "1",
                "checkpoint": summary["interrupt_checkpoint"],
                "step": summary["interrupt_step"],
                "next": list(state.next),
                "interrupts": len(paused),
            },
        )
        emit("resume", {"thread": "1", "value": "yes"})
        turn("1", "1", None, resume="yes")
        emit("memory", {"namespace": [MEMORIES, "1"], "memories": memories("1")})

        emit(
            "section",
            {"title": "Time travel: replay thread 1 from before the first answer", "thread": "1", "user": "1"},
        )
        history = list(app.get_state_history(cfg1))
        # the oldest checkpoint waiting to run call_model: before the model's first answer
        target = [s for s in history if s.next == ("call_model",)][-1]
        tcid = target.config["configurable"]["checkpoint_id"]
        summary["replayed_from"] = tcid
        emit(
            "replay",
            {"thread": "1", "checkpoint": tcid, "step": (target.metadata or {}).get("step"), "next": list(target.next)},
        )
        turn("1", "1", None, config={"configurable": {"thread_id": "1", "user_id": "1", "checkpoint_id": tcid}})
        info = saver.thread_info("1") or {}
        fork_lines = [ref for ref in info.get("lines", []) if "/forks/" in ref]
        summary["fork_lines"] = fork_lines
        latest = app.get_state(cfg1)
        summary["latest_checkpoint"] = latest.config["configurable"]["checkpoint_id"]
        emit("fork", {"thread": "1", "lines": fork_lines, "checkpoint": summary["latest_checkpoint"]})
        emit("memory", {"namespace": [MEMORIES, "1"], "memories": memories("1")})
        summary["threads"] = {t: saver.thread_info(t) for t in DEMO_THREADS}

        return summary
    finally:
        store.close()
        saver.close()


__all__ = ["DemoChatModel", "build_graph", "graph", "load_model", "route", "run"]
