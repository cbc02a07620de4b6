"""A small agent for the recording tests: a chat model that answers at random and
counts its calls in a file, tools with side effects in files (tests/test_recording.py).

Loaded by the tests and by ``gitckpt reproduce --graph tests/agent_app.py:builder``.
Environment: ``AGENT_COUNT`` (model call log), ``AGENT_TOOLS`` (tool run log),
``AGENT_SYSTEM`` (the system prompt), ``AGENT_ROUTE`` (``tools``, default, or ``end``:
the route after a tool-calling answer), ``AGENT_CITY_SUFFIX`` (added to the city the
fan graph's review node asks the weather of), ``AGENT_RESEARCH_PROMPT`` and
``AGENT_NOTE_SUFFIX`` (the fan graph's subgraph: its prompt, and added to the topic
of the note it writes), ``AGENT_JUDGE`` (the judge graph's instruction: structured output).
"""

from __future__ import annotations

import os
import random
import re
import uuid
from typing import Annotated, Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.tools import tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode
from langgraph.types import Send, interrupt
from pydantic import BaseModel, SecretStr
from typing_extensions import TypedDict

SECRET_KEY = "sk-test-DO-NOT-RECORD-5f3a9c1e7b"


def _log(var: str, line: str) -> None:
    path = os.environ.get(var)
    if path:
        with open(path, "a") as fh:
            fh.write(line + "\n")


class RandomModel(BaseChatModel):
    """Answers at random; asks for ``get_weather`` once per city in "weather in A and B"."""

    api_key: SecretStr = SecretStr(SECRET_KEY)
    temperature: float = 0.7

    @property
    def _llm_type(self) -> str:
        return "random-test-model"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": "random-1", "temperature": self.temperature}

    def _answer(self, messages: list) -> AIMessage:
        _log("AGENT_COUNT", f"model {len(messages)}")
        last = messages[-1]
        text = f"answer {random.random():.12f}"
        if isinstance(last, HumanMessage) and "weather in" in str(last.content):
            asked = str(last.content).split("weather in", 1)[1]
            cities = [c.strip() for c in re.split(r"\band\b|,", asked) if c.strip()]
            calls = [{"name": "get_weather", "args": {"city": c}, "id": f"call_{uuid.uuid4().hex[:8]}"}
                     for c in cities]
            return AIMessage(content=text, tool_calls=calls)
        return AIMessage(content=text)

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self._answer(messages))])

    def _stream(self, messages, stop=None, run_manager=None, **kwargs):
        msg = self._answer(messages)
        words = msg.content.split(" ")
        for i, w in enumerate(words):
            chunk = AIMessageChunk(content=w + (" " if i < len(words) - 1 else ""))
            if i == len(words) - 1 and msg.tool_calls:
                chunk = AIMessageChunk(content=chunk.content, tool_call_chunks=[
                    {"name": c["name"], "args": __import__("json").dumps(c["args"]), "id": c["id"], "index": j}
                    for j, c in enumerate(msg.tool_calls)])
            yield ChatGenerationChunk(message=chunk)

    def bind_tools(self, tools, **kwargs):
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    _log("AGENT_TOOLS", f"get_weather {city}")
    return f"{random.choice(['sunny', 'rainy', 'windy'])} in {city}, {random.randint(0, 30)} C"


class State(TypedDict):
    messages: Annotated[list, add_messages]


def make_builder(model: BaseChatModel | None = None) -> StateGraph:
    model = model or RandomModel()
    bound = model.bind_tools([get_weather])

    def agent(state: State) -> dict:
        system = SystemMessage(os.environ.get("AGENT_SYSTEM", "You are a helpful weather bot."))
        return {"messages": [bound.invoke([system, *state["messages"]])]}

    def route(state: State) -> str:
        last = state["messages"][-1]
        if getattr(last, "tool_calls", None) and os.environ.get("AGENT_ROUTE", "tools") == "tools":
            return "tools"
        return END

    b = StateGraph(State)
    b.add_node("agent", agent)
    b.add_node("tools", ToolNode([get_weather]))
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", route, ["tools", END])
    b.add_edge("tools", "agent")
    return b


builder = make_builder()


# -- a graph with parallel Send tasks, a subgraph and an interrupt ------------------

class FanState(TypedDict):
    topics: list[str]
    notes: Annotated[list, lambda a, b: a + b]
    approved: str


def make_fan_builder(model: BaseChatModel | None = None) -> StateGraph:
    model = model or RandomModel()

    class Sub(TypedDict):
        topic: str
        notes: Annotated[list, lambda a, b: a + b]

    def research(state: Sub) -> dict:
        prompt = os.environ.get("AGENT_RESEARCH_PROMPT", "write about")
        msg = model.invoke([HumanMessage(f"{prompt} {state['topic']}")])
        return {"notes": [f"{state['topic']}{os.environ.get('AGENT_NOTE_SUFFIX', '')}: {msg.content}"]}

    sub = StateGraph(Sub)
    sub.add_node("research", research)
    sub.add_edge(START, "research")
    sub_graph = sub.compile()

    def fan(state: FanState):
        return [Send("worker", {"topic": t, "notes": []}) for t in state["topics"]]

    def review(state: FanState) -> dict:
        answer = interrupt({"question": "approve?", "notes": len(state["notes"])})
        weather = get_weather.invoke({"city": str(answer) + os.environ.get("AGENT_CITY_SUFFIX", "")})
        return {"approved": f"{answer} / {weather}"}

    b = StateGraph(FanState)
    b.add_node("worker", sub_graph)
    b.add_node("review", review)
    b.add_conditional_edges(START, fan, ["worker"])
    b.add_edge("worker", "review")
    b.add_edge("review", END)
    return b


fan_builder = make_fan_builder()


# -- a node that streams its model itself, and a model whose settings hold secrets -----

class LeakyModel(RandomModel):
    """Puts its key into its settings (as some wrappers do): it must still not be recorded."""

    @property
    def _identifying_params(self) -> dict[str, Any]:
        key = self.api_key.get_secret_value()
        return {"model_name": "leaky-1", "api_key": key, "endpoint": f"https://api.example/v1?key={key}",
                "default_headers": {"Authorization": f"Bearer {key}", "X-Api-Key": key, "X-Trace": "on"},
                "note": f"the key is {key}"}


def make_stream_builder(model: BaseChatModel | None = None) -> StateGraph:
    """A node that streams the model itself (``model.stream``)."""
    model = model or RandomModel()

    def talk(state: State) -> dict:
        text = "".join(chunk.content for chunk in model.stream(state["messages"]))
        return {"messages": [AIMessage(content=text)]}

    b = StateGraph(State)
    b.add_node("talk", talk)
    b.add_edge(START, "talk")
    b.add_edge("talk", END)
    return b


def make_async_builder(model: BaseChatModel | None = None) -> StateGraph:
    """Async nodes only: ``ainvoke`` of a tool-calling model, a ToolNode, ``astream``."""
    model = model or RandomModel()
    bound = model.bind_tools([get_weather])

    async def agent(state: State) -> dict:
        return {"messages": [await bound.ainvoke(state["messages"])]}

    async def summary(state: State) -> dict:
        text = ""
        async for chunk in model.astream(state["messages"]):
            text += chunk.content
        return {"messages": [AIMessage(content="summary: " + text)]}

    async def route(state: State) -> str:
        return "tools" if getattr(state["messages"][-1], "tool_calls", None) else "summary"

    b = StateGraph(State)
    b.add_node("agent", agent)
    b.add_node("tools", ToolNode([get_weather]))
    b.add_node("summary", summary)
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", route, ["tools", "summary"])
    b.add_edge("tools", "summary")
    b.add_edge("summary", END)
    return b


class Approvals(TypedDict):
    items: list[str]
    out: Annotated[list, lambda a, b: a + b]


def make_approvals_builder(model: BaseChatModel | None = None) -> StateGraph:
    """Parallel ``Send`` tasks that each pause with ``interrupt()``: resumed with a
    map ``{interrupt id: answer}``, then each asks the model."""
    model = model or RandomModel()

    def fan(state: Approvals):
        return [Send("ask", {"item": i}) for i in state["items"]]

    def ask(state: dict) -> dict:
        answer = interrupt(f"approve {state['item']}?")
        reply = model.invoke([HumanMessage(f"{state['item']} was answered {answer}")])
        return {"out": [f"{state['item']}={answer}: {reply.content}"]}

    b = StateGraph(Approvals)
    b.add_node("ask", ask)
    b.add_conditional_edges(START, fan, ["ask"])
    b.add_edge("ask", END)
    return b


class Nest(TypedDict):
    x: Annotated[list, lambda a, b: a + b]


def make_nested_builder(model: BaseChatModel | None = None) -> StateGraph:
    """Nodes that call a subgraph (``invoke`` inside the node) whose node is a
    subgraph again: namespaces ``outer:<id>|mid:<id>``. The innermost node pauses
    with ``interrupt()``, then asks the model; ``AGENT_INNER_VALUE`` is the value
    it writes (default ``v``)."""
    model = model or RandomModel()

    def inner(state: Nest) -> dict:
        answer = interrupt("ok?")
        reply = model.invoke([HumanMessage(f"inner was answered {answer}")])
        return {"x": [f"{os.environ.get('AGENT_INNER_VALUE', 'v')}={answer}: {reply.content}"]}

    leaf = StateGraph(Nest)
    leaf.add_node("inner", inner)
    leaf.add_edge(START, "inner")
    mid = StateGraph(Nest)
    mid.add_node("mid", leaf.compile())
    mid.add_edge(START, "mid")
    mid_graph = mid.compile()

    def outer(state: Nest) -> dict:
        return {"x": mid_graph.invoke({"x": []})["x"]}

    b = StateGraph(Nest)
    b.add_node("outer", outer)
    b.add_node("outer2", outer)
    b.add_edge(START, "outer")
    b.add_edge("outer", "outer2")
    b.add_edge("outer2", END)
    return b


nested_builder = make_nested_builder()
approvals_builder = make_approvals_builder()
stream_builder = make_stream_builder()
async_builder = make_async_builder()
leaky_builder = make_builder(LeakyModel())


class Verdict(BaseModel):
    """A grade, as structured output."""

    score: int
    reason: str


class JudgeModel(RandomModel):
    """Asked with tools bound (``with_structured_output``), calls the first one with random arguments."""

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        tools = kwargs.get("tools") or []
        if not tools:
            return super()._generate(messages, stop, run_manager, **kwargs)
        _log("AGENT_COUNT", f"judge {len(messages)}")
        args = {"score": random.randint(0, 10), "reason": f"reason {random.random():.12f}"}
        call = {"name": tools[0]["function"]["name"], "args": args, "id": f"call_{uuid.uuid4().hex[:8]}"}
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content="", tool_calls=[call]))])


class Judged(TypedDict):
    messages: Annotated[list, add_messages]
    score: int
    reason: str


def make_judge_builder(model: BaseChatModel | None = None) -> StateGraph:
    judge = (model or JudgeModel()).with_structured_output(Verdict)

    def grade(state: Judged) -> dict:
        asked = [SystemMessage(os.environ.get("AGENT_JUDGE", "Grade the answer from 0 to 10.")), *state["messages"]]
        verdict = judge.invoke(asked)
        return {"score": verdict.score, "reason": verdict.reason}

    b = StateGraph(Judged)
    b.add_node("grade", grade)
    b.add_edge(START, "grade")
    b.add_edge("grade", END)
    return b


judge_builder = make_judge_builder()


# -- a node that reads and writes the store (cross-thread memory) ----------------------

def make_memory_builder(model: BaseChatModel | None = None) -> StateGraph:
    """A node that counts the memories under ``("memories", <user>)``, tells the model
    how many it knows, and stores the user's message as a new memory: its prompt and
    its answer depend on what the store held when it ran."""
    model = model or RandomModel()

    def remember(state: State) -> dict:
        from langgraph.config import get_store

        store = get_store()
        known = store.search(("memories", "ann"), limit=1000)
        last = state["messages"][-1]
        reply = model.invoke([SystemMessage(f"You know {len(known)} things about the user."), last])
        store.put(("memories", "ann"), f"m{len(known)}", {"text": str(last.content)})
        return {"messages": [AIMessage(content=f"({len(known)} known) {reply.content}")]}

    b = StateGraph(State)
    b.add_node("remember", remember)
    b.add_edge(START, "remember")
    b.add_edge("remember", END)
    return b


memory_builder = make_memory_builder()


def make_optional_sub_builder() -> StateGraph:
    """A node that runs a subgraph (namespace ``step:<task id>``) only when
    ``AGENT_EXTRA_SUB`` is set, and writes the same whatever it does."""
    leaf = StateGraph(Nest)
    leaf.add_node("check", lambda state: {"x": ["checked"]})
    leaf.add_edge(START, "check")
    leaf_graph = leaf.compile()

    def step(state: Nest) -> dict:
        if os.environ.get("AGENT_EXTRA_SUB"):
            leaf_graph.invoke({"x": []})
        return {"x": ["done"]}

    b = StateGraph(Nest)
    b.add_node("step", step)
    b.add_edge(START, "step")
    b.add_edge("step", END)
    return b


optional_sub_builder = make_optional_sub_builder()
