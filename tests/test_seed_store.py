"""The seeds' cross-thread memory example ("Bob"), end to end, on one repository.

A graph compiled with ``GitSaver`` and ``GitStore`` on the same bare repository:
user 1 says "Hi! Remember: my name is Bob" on thread 1 and is known on thread 2;
user 2 is not; all of it survives a new process. The chat model is a
deterministic fake that answers from the system prompt, which the node builds
from what the store returns, so the answers depend on the store doing its job.
The embedding is a deterministic bag of letters. No network.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from gitckpt.git.repo import publish_all

#: The graph of the seed (LangGraph's "How to add cross-thread persistence"),
#: shared verbatim by this process and the new one.
GRAPH = textwrap.dedent(
    """
    import re
    import uuid

    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.runnables import RunnableConfig
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.store.base import BaseStore

    from gitckpt import GitSaver, GitStore


    class Letters(Embeddings):
        calls = 0

        def embed_documents(self, texts):
            Letters.calls += len(texts)
            return [self.embed_query(t) for t in texts]

        def embed_query(self, text):
            return [float(text.lower().count(c)) for c in "abcdefghijklmnopqrstuvwxyz"] + [1.0]


    class MemoryChat(BaseChatModel):
        '''Answers "what is my name?" from the user info in its system prompt.'''

        @property
        def _llm_type(self) -> str:
            return "fake-memory-chat"

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            system = messages[0].content if messages[0].type == "system" else ""
            question = messages[-1].content.lower()
            if "remember" in question:
                text = "Nice to meet you! I will remember that."
            elif "name" in question:
                found = re.search(r"my name is (\\w+)", system)
                text = f"Your name is {found.group(1)}." if found else "I don't know your name."
            else:
                text = "OK."
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


    model = MemoryChat()


    def call_model(state: MessagesState, config: RunnableConfig, *, store: BaseStore):
        namespace = ("memories", config["configurable"]["user_id"])
        memories = store.search(namespace, query=str(state["messages"][-1].content))
        info = "\\n".join(d.value["data"] for d in memories)
        system_msg = f"You are a helpful assistant talking to the user. User info: {info}"
        last = state["messages"][-1]
        if "remember" in last.content.lower():
            store.put(namespace, str(uuid.uuid4()), {"data": last.content})
        response = model.invoke([{"role": "system", "content": system_msg}] + state["messages"])
        return {"messages": response}


    async def acall_model(state: MessagesState, config: RunnableConfig, *, store: BaseStore):
        namespace = ("memories", config["configurable"]["user_id"])
        memories = await store.asearch(namespace, query=str(state["messages"][-1].content))
        info = "\\n".join(d.value["data"] for d in memories)
        system_msg = f"You are a helpful assistant talking to the user. User info: {info}"
        last = state["messages"][-1]
        if "remember" in last.content.lower():
            await store.aput(namespace, str(uuid.uuid4()), {"data": last.content})
        response = await model.ainvoke([{"role": "system", "content": system_msg}] + state["messages"])
        return {"messages": response}


    def open_graph(path, node=call_model):
        store = GitStore(path, index={"embed": Letters(), "dims": 27, "fields": ["data"]})
        saver = GitSaver(path)
        builder = StateGraph(MessagesState)
        builder.add_node("call_model", node)
        builder.add_edge(START, "call_model")
        return builder.compile(checkpointer=saver, store=store), saver, store


    def ask(graph, thread, user, text):
        config = {"configurable": {"thread_id": thread, "user_id": user}}
        return graph.invoke({"messages": [{"role": "user", "content": text}]}, config)["messages"][-1].content
    """
)


def load():
    namespace: dict = {}
    exec(compile(GRAPH, "seed_graph", "exec"), namespace)
    return namespace


def git(repo, *args) -> str:
    publish_all()  # plain git sees what is published (format.md 21)
    return subprocess.run(["git", "--git-dir", str(repo), *args], capture_output=True, text=True, check=True).stdout


def test_seed_cross_thread_memory(repo_path):
    seed = load()
    graph, saver, store = seed["open_graph"](str(repo_path))
    ask = seed["ask"]

    assert ask(graph, "1", "1", "Hi! Remember: my name is Bob") == "Nice to meet you! I will remember that."
    assert [m.value for m in store.search(("memories", "1"))] == [{"data": "Hi! Remember: my name is Bob"}]
    assert ask(graph, "2", "1", "what is my name?") == "Your name is Bob."
    assert ask(graph, "3", "2", "what is my name?") == "I don't know your name."
    assert store.search(("memories", "2")) == []
    assert store.list_namespaces() == [("memories", "1")]
    store.close()
    saver.close()

    # one repository holds both: the threads' branches and the store's
    refs = git(repo_path, "for-each-ref", "--format=%(refname)").split()
    assert "refs/heads/store" in refs
    assert {"refs/heads/threads/1", "refs/heads/threads/2", "refs/heads/threads/3"} <= set(refs)
    assert git(repo_path, "log", "--format=%s", "store").startswith("put memories/1: ")
    assert "Hi! Remember: my name is Bob" in git(repo_path, "log", "-p", "store")

    # a new process: the memory, the threads and the vectors are all still there
    script = GRAPH + textwrap.dedent(
        """
        import json, sys
        graph, saver, store = open_graph(sys.argv[1])
        out = {
            "user1_new_thread": ask(graph, "4", "1", "what is my name?"),
            "user2": ask(graph, "5", "2", "what is my name?"),
            "thread1_again": ask(graph, "1", "1", "and what is my name?"),
            "thread1_messages": len(graph.get_state({"configurable": {"thread_id": "1"}}).values["messages"]),
            "memories": [m.value for m in store.search(("memories", "1"))],
            "documents_embedded": Letters.calls,
        }
        store.close()
        saver.close()
        print(json.dumps(out))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script, str(repo_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out == {
        "user1_new_thread": "Your name is Bob.",
        "user2": "I don't know your name.",
        "thread1_again": "Your name is Bob.",
        "thread1_messages": 4,
        "memories": [{"data": "Hi! Remember: my name is Bob"}],
        "documents_embedded": 0,  # the memory's vector was read from git, not recomputed
    }


async def test_seed_cross_thread_memory_async(repo_path):
    seed = load()
    graph, saver, store = seed["open_graph"](str(repo_path), seed["acall_model"])

    async def ask(thread, user, text):
        config = {"configurable": {"thread_id": thread, "user_id": user}}
        result = await graph.ainvoke({"messages": [{"role": "user", "content": text}]}, config)
        return result["messages"][-1].content

    assert await ask("1", "1", "Hi! Remember: my name is Bob") == "Nice to meet you! I will remember that."
    assert await ask("2", "1", "what is my name?") == "Your name is Bob."
    assert await ask("3", "2", "what is my name?") == "I don't know your name."
    assert [m.value for m in await store.asearch(("memories", "1"))] == [{"data": "Hi! Remember: my name is Bob"}]
    state = await graph.aget_state({"configurable": {"thread_id": "2"}})
    assert [m.content for m in state.values["messages"]] == ["what is my name?", "Your name is Bob."]
    store.close()
    saver.close()
