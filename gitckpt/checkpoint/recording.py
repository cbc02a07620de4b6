"""Recording model and tool calls, and answering them again offline (issue 13).

How a call is recorded (``GitSaver(path, record=True)``):

* one LangChain callback handler (:class:`Recorder`) is attached to every run
  of the process through ``register_configure_hook``, the hook LangSmith
  tracing uses; its context variable's *default* is the handler, so it is
  active in every thread and task without the user changing a graph. It is
  registered when the first recording saver is made.
* For each chat-model and tool call it reads the config of the LangGraph
  task the call runs in (``var_child_runnable_config``: the task's
  checkpointer, thread, task id; the run metadata LangGraph adds: step,
  node, path, namespace). Calls of tasks whose checkpointer is not a
  recording ``GitSaver`` are ignored at once.
* A finished call is filed with its saver under ``(thread, task id)``; the
  saver stores it in the same commit as the task's pending writes
  (``put_writes``), as ``writes/<checkpoint>/<task>.call<NN>`` blobs
  (docs/format.md, 18). A call made inside another recorded call (a model
  called by a tool) is not recorded: the outer call's answer covers it.

How a call is answered again (``with saver.replaying(thread_id):``):

* every recorded call of the thread is loaded; a context variable marks the
  replay, so only runs started inside the ``with`` block are affected;
* a chat-model call is matched in the handler's ``on_chat_model_start``
  (every ``invoke``, ``stream``, ``batch``, sync or async, passes there with
  the messages and the invocation parameters), and ``BaseChatModel``'s
  generation step returns the recorded message instead of calling the
  provider; ``stream()`` falls back to ``invoke()`` during a replay.
* a tool call is matched in ``BaseTool.run``/``arun`` before the tool's
  body runs. These three wrappers are installed on LangChain's base classes
  once, when the first replay starts, and do nothing outside a replay.

Matching (docs/format.md, 18): by what was asked: a digest of the normalised
input (messages without ids, model settings without secrets; tool name and
arguments), among the calls not answered yet, preferring the same namespace,
node, step and task path, then the earliest recorded.
"""

from __future__ import annotations

import contextvars
import difflib
import hashlib
import json
import re
import threading
import uuid
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage

from ..errors import InvalidInputError, ReplayMissError
from . import format as fmt

# -- normalisation: what counts as "the same input" -------------------------------

_ADDR = re.compile(r" at 0x[0-9a-fA-F]+")
_SECRET_KEY = re.compile(
    r"(api[-_]?key|secret|password|passwd|credential|access[-_]?token|auth[-_]?token|bearer|private[-_]?key"
    r"|authorization|cookie)",
    re.I,
)
_MESSAGE_DROP = {"id", "response_metadata", "usage_metadata", "lc_attributes"}


def _default(value: Any) -> Any:
    if isinstance(value, BaseMessage):
        return normalize_message(value)
    if hasattr(value, "model_dump") and callable(value.model_dump):
        try:
            return value.model_dump(mode="json")
        except Exception:
            pass
    if isinstance(value, type):
        schema = getattr(value, "model_json_schema", None)
        if callable(schema):
            try:
                return schema()
            except Exception:
                pass
        return f"{value.__module__}.{value.__qualname__}"
    if isinstance(value, (set, frozenset)):
        return sorted(map(str, value))
    if isinstance(value, bytes):
        return f"<bytes {hashlib.sha256(value).hexdigest()[:16]}>"
    return _ADDR.sub("", str(value))


def to_plain(value: Any) -> Any:
    """A JSON-like copy of ``value``: dicts, lists, str, numbers, None."""
    return json.loads(json.dumps(value, default=_default, sort_keys=True, ensure_ascii=False))


def normalize_message(m: Any) -> dict[str, Any]:
    """A message as it counts for matching: no id, no provider metadata."""
    if not isinstance(m, BaseMessage):
        return {"value": to_plain(m)}
    out: dict[str, Any] = {"type": m.type, "content": m.content}
    if m.name:
        out["name"] = m.name
    if m.additional_kwargs:
        out["additional_kwargs"] = m.additional_kwargs
    calls = m.tool_calls if isinstance(m, AIMessage) else None
    if calls:
        out["tool_calls"] = [{"name": c.get("name"), "args": c.get("args"), "id": c.get("id")} for c in calls]
    fields = ("tool_call_id", "status", "artifact") if m.type == "tool" else ()
    for field in fields:
        v = getattr(m, field, None)
        if v not in (None, "success") or (field == "tool_call_id" and v):
            out[field] = v
    return to_plain(out)


def digest(value: Any) -> str:
    """The digest of a normalised input: of a model call, its settings and the
    digests of its messages (so a message's digest is computed once, :func:`_message_key`)."""
    if isinstance(value, dict) and "messages" in value and "settings" in value:
        h = hashlib.sha256(_dump(value["settings"]).encode())
        for m in value["messages"]:
            h.update(_message_digest(m))
        return h.hexdigest()
    return hashlib.sha256(_dump(value).encode()).hexdigest()


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _message_digest(normalized: dict) -> bytes:
    return hashlib.sha256(_dump(normalized).encode()).digest()


# A chat re-sends its whole history at every call, and each run reads it anew from
# the checkpoint (new objects). The digest of a message is kept by its id, type and
# content (hash), so a message is normalised and hashed once, not once per call.
# Keys and values are atomic (str, int, bytes), so the garbage collector does not
# walk this cache (format.md 11). Like the chunk cache (format.md 5), a change of
# another field under the same id and content (in place, which LangGraph asks
# nodes not to do) is not seen.
_DIGEST_CACHE: dict[tuple, bytes] = {}
_DIGEST_MAX = 200_000


def message_digest(m: Any) -> bytes:
    """The digest of one prompt message's normalised form (cached for messages with an id)."""
    if not isinstance(m, BaseMessage) or not m.id:
        return _message_digest(normalize_message(m))
    content = m.content
    # (tool_calls only on AI messages: a missing attribute of a pydantic model is slow to ask for)
    key = (
        m.id,
        m.type,
        hash(content) if isinstance(content, str) else _dump(to_plain(content)),
        len(m.tool_calls) if isinstance(m, AIMessage) else 0,
    )
    hit = _DIGEST_CACHE.get(key)
    if hit is None:
        hit = _message_digest(normalize_message(m))
        if len(_DIGEST_CACHE) >= _DIGEST_MAX:
            _DIGEST_CACHE.clear()
        _DIGEST_CACHE[key] = hit
    return hit


class ModelAsk:
    """What a chat-model call was asked: its messages (the objects) and its settings.
    The digest is computed at once; the normalised messages only when needed (a
    message stored inline, a miss's diff). ``settings_hash``: a sha256 already fed
    with the settings (from :func:`model_input`'s cache; copied, not changed)."""

    __slots__ = ("objects", "settings", "digest", "_messages")

    def __init__(self, objects: list, settings: dict, settings_hash: Any = None) -> None:
        self.objects, self.settings = objects, settings
        h = settings_hash.copy() if settings_hash is not None else hashlib.sha256(_dump(settings).encode())
        # message_digest inlined for the cache hits (a prompt re-sends the whole history:
        # hundreds of messages per call), and one update of the joined digests
        cache, parts = _DIGEST_CACHE, []
        for m in objects:
            hit = None
            if isinstance(m, BaseMessage) and m.id:
                content = m.content
                hit = cache.get(
                    (
                        m.id,
                        m.type,
                        hash(content) if isinstance(content, str) else _dump(to_plain(content)),
                        len(m.tool_calls) if isinstance(m, AIMessage) else 0,
                    )
                )
            parts.append(hit if hit is not None else message_digest(m))
        h.update(b"".join(parts))
        self.digest = h.hexdigest()
        self._messages: list | None = None

    @property
    def messages(self) -> list[dict]:
        if self._messages is None:
            self._messages = [normalize_message(m) for m in self.objects]
        return self._messages

    def as_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "settings": self.settings}


def secret_values(obj: Any) -> list[str]:
    """The secrets an object holds: its ``SecretStr`` fields and its ``lc_secrets`` attributes."""
    found: list[str] = []
    try:
        from pydantic import SecretBytes, SecretStr
    except Exception:  # pragma: no cover
        SecretStr = SecretBytes = ()  # type: ignore
    fields = getattr(type(obj), "model_fields", None) or {}
    for name in list(fields) + list(getattr(obj, "lc_secrets", {}) or {}):
        try:
            v = getattr(obj, name, None)
        except Exception:
            continue
        if isinstance(v, SecretStr):
            v = v.get_secret_value()
        elif isinstance(v, SecretBytes):
            v = v.get_secret_value().decode("utf-8", "replace")
        elif name not in (getattr(obj, "lc_secrets", {}) or {}) and not _SECRET_KEY.search(name):
            continue
        if isinstance(v, str) and len(v) >= 4:
            found.append(v)
    return found


def sanitize(value: Any, secrets: Sequence[str] = ()) -> Any:
    """``value`` without secret fields: keys that name a secret are dropped,
    ``SecretStr`` values and known secret strings are replaced."""
    try:
        from pydantic import SecretBytes, SecretStr

        secret_types: tuple = (SecretStr, SecretBytes)
    except Exception:  # pragma: no cover
        secret_types = ()
    if isinstance(value, dict):
        return {k: sanitize(v, secrets) for k, v in value.items() if not (isinstance(k, str) and _SECRET_KEY.search(k))}
    if isinstance(value, (list, tuple)):
        return [sanitize(v, secrets) for v in value]
    if secret_types and isinstance(value, secret_types):
        return "<secret>"
    if isinstance(value, str):
        for s in secrets:
            if s and s in value:
                value = value.replace(s, "<secret>")
    return value


# A model sends the same settings with every call: their sanitised form and the hash
# of it are kept by the settings' JSON text and the model's secrets (in memory only).
_SETTINGS_CACHE: dict[tuple, tuple[dict, Any]] = {}
_SETTINGS_MAX = 256


def model_input(messages: list, params: dict[str, Any], secrets: Sequence[str] = ()) -> ModelAsk:
    """What a chat-model call was asked: its messages and its settings (without secrets)."""
    try:
        key: tuple | None = (json.dumps(params or {}, default=_default, sort_keys=True), tuple(secrets))
    except (TypeError, ValueError):  # keys that cannot be sorted, a cycle: not cached
        key = None
    hit = _SETTINGS_CACHE.get(key) if key is not None else None
    if hit is None:
        settings = to_plain(sanitize({k: v for k, v in (params or {}).items()}, secrets))
        settings = sanitize(settings, secrets)  # a secret inside a converted value
        hit = (settings, hashlib.sha256(_dump(settings).encode()))
        if key is not None:
            if len(_SETTINGS_CACHE) >= _SETTINGS_MAX:
                _SETTINGS_CACHE.clear()
            _SETTINGS_CACHE[key] = hit
    settings, h = hit
    return ModelAsk(list(messages), settings, h)


def tool_input(name: str, args: Any) -> dict[str, Any]:
    return {"name": name, "args": to_plain(args)}


def strip_task_ids(ns: str) -> str:
    """``outer:<id>|inner:<id>`` -> ``outer|inner``: a namespace as it is in every run."""
    return "|".join(part.split(":", 1)[0] for part in ns.split("|")) if ns else ""


# -- where a call runs ------------------------------------------------------------


def task_context(config: Any = None) -> dict[str, Any] | None:
    """The LangGraph task a call runs in (from the current runnable config), or None."""
    if config is None:
        from langchain_core.runnables.config import var_child_runnable_config

        config = var_child_runnable_config.get()
    if not config:
        return None
    conf = config.get("configurable") or {}
    task_id = conf.get("__pregel_task_id")
    if not task_id:
        return None
    md = config.get("metadata") or {}
    path = md.get("langgraph_path") or ()
    return {
        "saver": conf.get("__pregel_checkpointer"),
        "thread_id": str(conf.get("thread_id")) if conf.get("thread_id") is not None else None,
        "task_id": task_id,
        "ns": md.get("langgraph_checkpoint_ns") or conf.get("checkpoint_ns") or "",
        "node": md.get("langgraph_node"),
        "step": md.get("langgraph_step"),
        "path": [str(p) for p in path],
    }


def _message_of(generation: Any) -> Any:
    from langchain_core.messages import AIMessage, message_chunk_to_message

    msg = getattr(generation, "message", None)
    if msg is None:
        return AIMessage(content=getattr(generation, "text", ""))
    return message_chunk_to_message(msg)


# -- the errors of a replay -------------------------------------------------------


class RecordedToolError(Exception):
    """A tool's recorded error, raised again during a replay (its type was not a builtin)."""


# -- the handler ------------------------------------------------------------------


class Recorder(BaseCallbackHandler):
    """Files every model and tool call of a recording saver's graph runs (module docstring)."""

    run_inline = True
    raise_error = True  # only ReplayMissError is raised on purpose; recording faults warn
    # only model and tool events matter: LangChain then skips this handler for the
    # chain events every node, writer and branch of a graph emits
    ignore_chain = True  # (tool events are gated by ignore_agent: not set)
    ignore_retriever = True
    ignore_retry = True
    ignore_custom_event = True

    def __init__(self) -> None:
        self._open: dict[uuid.UUID, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._order: dict[tuple[int, str, str], int] = {}

    # which saver (if any) records this call
    @staticmethod
    def _target(ctx: dict[str, Any] | None) -> Any:
        if ctx is None or ctx.get("thread_id") is None:
            return None
        saver: Any = ctx.get("saver")
        if saver is None or getattr(saver, "_recording", None) is None:
            return None
        replay = _REPLAY.get()
        if saver.record or (replay is not None and replay.on_miss == "live"):
            return saver
        return None

    def _start(
        self,
        run_id: uuid.UUID,
        parent_run_id: uuid.UUID | None,
        record: dict[str, Any],
        ctx: dict[str, Any] | None,
        saver: Any = None,
    ) -> None:
        saver = saver if saver is not None else self._target(ctx)
        if saver is None or ctx is None:
            return
        with self._lock:
            if parent_run_id is not None and parent_run_id in self._open:
                return  # inside a recorded call: the outer answer covers it
            key = (id(saver), ctx["thread_id"], ctx["task_id"])
            n = self._order.get(key, 0)
            self._order[key] = n + 1
            if len(self._order) > 10_000:
                self._order.clear()
            record.update(ctx_fields(ctx), n=n)
            self._open[run_id] = {"saver": saver, "ctx": ctx, "record": record}

    def _finish(self, run_id: uuid.UUID, **fields: Any) -> None:
        with self._lock:
            item = self._open.pop(run_id, None)
        if item is None:
            return
        item["record"].update(fields)
        try:
            item["saver"]._recording.file(item["ctx"]["thread_id"], item["ctx"]["task_id"], item["record"])
        except Exception as exc:  # never break the user's run over a recording
            warnings.warn(f"gitckpt: a call could not be recorded ({exc})", stacklevel=2)

    # chat models
    def on_chat_model_start(
        self, serialized, messages, *, run_id, parent_run_id=None, tags=None, metadata=None, **kwargs
    ):
        replay = _REPLAY.get()
        ctx = task_context()
        saver = self._target(ctx) if ctx is not None else None
        if saver is None and replay is None:  # not a call of a recording saver's run: no work at all
            return
        params = kwargs.get("invocation_params") or {}
        model = _current_models.get(None)
        secrets = secret_values(model) if model is not None else []
        asked = model_input(messages[0] if messages else [], params, secrets)
        name = (
            params.get("model")
            or params.get("model_name")
            or (metadata or {}).get("ls_model_name")
            or (serialized or {}).get("name")
            or params.get("_type")
            or "chat model"
        )
        replayed = False
        if replay is not None:
            replayed = replay.answer_model(run_id, str(name), asked, ctx)
        if saver is not None:
            self._start(
                run_id,
                parent_run_id,
                {"kind": "model", "name": str(name), "input": asked, "digest": asked.digest, "replayed": replayed},
                ctx,
                saver,
            )

    def on_llm_start(self, serialized, prompts, **kwargs):  # completion models are not recorded
        return None

    def on_llm_end(self, response, *, run_id, **kwargs):
        if run_id not in self._open:
            return
        try:
            message = _message_of(response.generations[0][0])
        except Exception:
            message = None
        self._finish(run_id, output=message)

    def on_llm_error(self, error, *, run_id, **kwargs):
        if run_id in self._open:
            self._finish(run_id, error=error)

    # tools
    def on_tool_start(
        self, serialized, input_str, *, run_id, parent_run_id=None, tags=None, metadata=None, inputs=None, **kwargs
    ):
        ctx = task_context()
        saver = self._target(ctx) if ctx is not None else None
        if saver is None:  # not a call of a recording saver's run: no work at all
            return
        name = (serialized or {}).get("name") or "tool"
        asked = tool_input(name, inputs if inputs is not None else input_str)
        self._start(
            run_id,
            parent_run_id,
            {"kind": "tool", "name": name, "input": asked, "digest": digest(asked), "replayed": False},
            ctx,
            saver,
        )

    def on_tool_end(self, output, *, run_id, **kwargs):
        if run_id in self._open:
            self._finish(run_id, output=output)

    def on_tool_error(self, error, *, run_id, **kwargs):
        if run_id in self._open:
            self._finish(run_id, error=error)

    def file_replayed_tool(self, ctx: dict | None, name: str, asked: dict, output: Any, error: Any) -> None:
        """A tool call answered from a recording is recorded again in a recording saver."""
        run_id = uuid.uuid4()
        self._start(
            run_id,
            None,
            {"kind": "tool", "name": name, "input": asked, "digest": digest(asked), "replayed": True},
            ctx or {},
        )
        self._finish(run_id, output=output, error=error)


def ctx_fields(ctx: dict[str, Any]) -> dict[str, Any]:
    return {
        "node": ctx.get("node"),
        "step": ctx.get("step"),
        "path": ctx.get("path") or [],
        "ns": ctx.get("ns") or "",
        "task": ctx.get("task_id"),
    }


_RECORDER: Recorder | None = None
_HOOK_LOCK = threading.Lock()
_HOOK_VAR: contextvars.ContextVar | None = None
#: The chat model whose call is being started (set by the generation wrapper), for its secrets.
_current_models: contextvars.ContextVar = contextvars.ContextVar("gitckpt_current_model", default=None)


def ensure_hook() -> Recorder:
    """Attach the recorder to every LangChain run of this process (once)."""
    global _RECORDER, _HOOK_VAR
    with _HOOK_LOCK:
        if _RECORDER is None:
            from langchain_core.tracers.context import register_configure_hook

            _RECORDER = Recorder()
            _HOOK_VAR = contextvars.ContextVar("gitckpt_recorder", default=_RECORDER)
            register_configure_hook(_HOOK_VAR, True)
            _install_model_wrappers()
        return _RECORDER


# -- the wrappers on LangChain's base classes -------------------------------------

_PATCHED = False


def _install_model_wrappers() -> None:
    """Wrap ``BaseChatModel.generate``/``agenerate``/``_generate_with_cache``/
    ``_agenerate_with_cache``/``_should_stream`` and ``BaseTool.run``/``arun``.

    Outside a replay each wrapper only reads a context variable (and notes the
    model whose call starts, so its secret fields can be left out of the record).
    """
    global _PATCHED
    if _PATCHED:
        return
    _PATCHED = True
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.tools import BaseTool

    gen, agen = BaseChatModel._generate_with_cache, BaseChatModel._agenerate_with_cache
    should_stream = BaseChatModel._should_stream
    generate, agenerate = BaseChatModel.generate, BaseChatModel.agenerate
    stream, astream = BaseChatModel.stream, BaseChatModel.astream

    def _answer(run_manager: Any) -> Any:
        replay = _REPLAY.get()
        if replay is None or run_manager is None:
            return None
        msg = replay.take(run_manager.run_id)
        if msg is None:
            return None
        msg = msg.model_copy(update={"id": f"lc_run--{run_manager.run_id}"})
        return ChatResult(generations=[ChatGeneration(message=msg)])

    def _generate_with_cache(self, messages, stop=None, run_manager=None, **kwargs):
        answer = _answer(run_manager)
        return answer if answer is not None else gen(self, messages, stop=stop, run_manager=run_manager, **kwargs)

    async def _agenerate_with_cache(self, messages, stop=None, run_manager=None, **kwargs):
        answer = _answer(run_manager)
        if answer is not None:
            return answer
        return await agen(self, messages, stop=stop, run_manager=run_manager, **kwargs)

    def _should_stream_w(self, *args, **kwargs):
        if _REPLAY.get() is not None:
            return False
        return should_stream(self, *args, **kwargs)

    def generate_w(self, *args, **kwargs):
        token = _current_models.set(self)
        try:
            return generate(self, *args, **kwargs)
        finally:
            _current_models.reset(token)

    async def agenerate_w(self, *args, **kwargs):
        token = _current_models.set(self)
        try:
            return await agenerate(self, *args, **kwargs)
        finally:
            _current_models.reset(token)

    def stream_w(self, *args, **kwargs):
        token = _current_models.set(self)
        try:
            yield from stream(self, *args, **kwargs)
        finally:
            try:
                _current_models.reset(token)
            except ValueError:  # resumed in another context
                pass

    async def astream_w(self, *args, **kwargs):
        token = _current_models.set(self)
        try:
            async for chunk in astream(self, *args, **kwargs):
                yield chunk
        finally:
            try:
                _current_models.reset(token)
            except ValueError:
                pass

    BaseChatModel._generate_with_cache = _generate_with_cache  # type: ignore[method-assign]
    BaseChatModel._agenerate_with_cache = _agenerate_with_cache  # type: ignore[method-assign]
    BaseChatModel._should_stream = _should_stream_w  # type: ignore[method-assign]
    BaseChatModel.generate = generate_w  # type: ignore[method-assign]
    BaseChatModel.agenerate = agenerate_w  # type: ignore[method-assign]
    BaseChatModel.stream = stream_w  # type: ignore[method-assign]
    BaseChatModel.astream = astream_w  # type: ignore[method-assign]

    run, arun = BaseTool.run, BaseTool.arun

    def _tool_answer(tool: Any, given: Any, kwargs: dict) -> tuple[bool, Any]:
        replay = _REPLAY.get()
        if replay is None:
            return False, None
        filtered = tool._filter_injected_args(given) if isinstance(given, dict) else given
        asked = tool_input(tool.name, filtered)
        ctx = task_context(kwargs.get("config")) or task_context()
        found = replay.answer_tool(tool.name, asked, ctx)
        if found is None:
            return False, None
        output, error = found
        if _RECORDER is not None and ctx is not None:
            _RECORDER.file_replayed_tool(ctx, tool.name, asked, output, error)
        if error is not None:
            raise error
        call_id = kwargs.get("tool_call_id")
        if call_id is not None and hasattr(output, "tool_call_id"):
            output = output.model_copy(update={"tool_call_id": call_id})
        return True, output

    def run_w(self, tool_input, *args, **kwargs):
        hit, output = _tool_answer(self, tool_input, kwargs)
        return output if hit else run(self, tool_input, *args, **kwargs)

    async def arun_w(self, tool_input, *args, **kwargs):
        hit, output = _tool_answer(self, tool_input, kwargs)
        return output if hit else await arun(self, tool_input, *args, **kwargs)

    BaseTool.run = run_w  # type: ignore[method-assign]
    BaseTool.arun = arun_w  # type: ignore[method-assign]


# -- a replay ---------------------------------------------------------------------

_REPLAY: contextvars.ContextVar = contextvars.ContextVar("gitckpt_replay", default=None)


class RecordedCall:
    """One recorded call, as a replay uses it."""

    __slots__ = ("kind", "name", "node", "step", "path", "ns", "digest", "order", "data", "used", "_loader")

    def __init__(self, data: dict[str, Any], order: tuple, loader: Any) -> None:
        self.data = data
        self.kind = data.get("kind")
        self.name = data.get("name")
        self.node = data.get("node")
        self.step = data.get("step")
        self.path = list(data.get("path") or [])
        self.ns = strip_task_ids(data.get("ns") or "")
        self.digest = data.get("digest")
        self.order = order
        self.used = False
        self._loader = loader

    def input(self) -> Any:
        return self._loader.input_of(self)

    def answer(self) -> tuple[Any, BaseException | None]:
        return self._loader.output_of(self)


def _diff(old: Any, new: Any, old_name: str = "recorded", new_name: str = "new") -> str:
    a = json.dumps(old, indent=1, sort_keys=True, ensure_ascii=False, default=str).splitlines()
    b = json.dumps(new, indent=1, sort_keys=True, ensure_ascii=False, default=str).splitlines()
    return "\n".join(difflib.unified_diff(a, b, old_name, new_name, lineterm="", n=2))


class Replay:
    """The recorded calls of a thread, answered in order of what is asked."""

    def __init__(self, calls: list[RecordedCall], on_miss: str = "error") -> None:
        if on_miss not in ("error", "live"):
            raise InvalidInputError(f"on_miss must be 'error' or 'live', not {on_miss!r}")
        self.calls = calls
        self.on_miss = on_miss
        self._answers: dict[uuid.UUID, Any] = {}
        self._lock = threading.Lock()
        self.answered = {"model": 0, "tool": 0}
        self.live = {"model": 0, "tool": 0}

    def _find(self, kind: str, name: str, dig: str, ctx: dict | None) -> RecordedCall | None:
        ns = strip_task_ids((ctx or {}).get("ns") or "")
        node, step, path = (ctx or {}).get("node"), (ctx or {}).get("step"), (ctx or {}).get("path") or []
        best, best_key = None, None
        for call in self.calls:
            if call.used or call.kind != kind or call.digest != dig:
                continue
            key = (call.node != node, call.ns != ns, call.step != step, call.path != path, call.order)
            if best_key is None or key < best_key:
                best, best_key = call, key
        return best

    def _miss(self, kind: str, name: str, asked: dict, ctx: dict | None) -> ReplayMissError:
        ctx = ctx or {}
        node, step = ctx.get("node"), ctx.get("step")
        ns = strip_task_ids(ctx.get("ns") or "")
        pool = [c for c in self.calls if c.kind == kind and not c.used] or [c for c in self.calls if c.kind == kind]
        near = sorted(
            pool, key=lambda c: (c.node != node, c.ns != ns, abs((c.step or 0) - (step or 0)), c.name != name, c.order)
        )[:1]
        what = (
            "the model was asked something it was not asked before"
            if kind == "model"
            else (f"tool {name!r} was called with arguments it was not called with before")
        )
        where = f"step {step}, node {node!r}" + (f" (namespace {ns})" if ns and ns.count("|") else "")
        text = f"no recorded answer at {where}: {what}"
        diff = ""
        where_ns = ns
        if near and ns and near[0].ns == ns:  # the namespace as recorded (its task ids are the recording's)
            where_ns = near[0].data.get("ns") or ns
        if near:
            c = near[0]
            try:
                diff = _diff(c.input(), asked)
            except Exception as exc:  # the recorded input could not be read back
                diff = f"(recorded input unreadable: {exc})"
            text += f"; nearest recorded call: {c.kind} {c.name!r} of node {c.node!r} at step {c.step}"
            if diff:
                text += "\n" + diff
        else:
            text += "; the recording has no call of that kind"
        return ReplayMissError(text, kind=kind, node=node, step=step, diff=diff, ns=where_ns)

    def answer_model(self, run_id: uuid.UUID, name: str, asked: ModelAsk, ctx: dict | None) -> bool:
        with self._lock:
            call = self._find("model", name, asked.digest, ctx)
            if call is None:
                if self.on_miss == "live":
                    self.live["model"] += 1
                    return False
                raise self._miss("model", name, asked.as_dict(), ctx)
            call.used = True
        output, error = call.answer()
        if error is not None:
            raise error
        with self._lock:
            self._answers[run_id] = output
            self.answered["model"] += 1
        return True

    def take(self, run_id: uuid.UUID) -> Any:
        with self._lock:
            return self._answers.pop(run_id, None)

    def answer_tool(self, name: str, asked: dict, ctx: dict | None) -> tuple[Any, Any] | None:
        with self._lock:
            call = self._find("tool", name, digest(asked), ctx)
            if call is None:
                if self.on_miss == "live":
                    self.live["tool"] += 1
                    return None
                raise self._miss("tool", name, asked, ctx)
            call.used = True
            self.answered["tool"] += 1
        return call.answer()


class _QuietMiss:
    """Keeps LangChain's callback manager from logging a replay miss it is about to raise."""

    @staticmethod
    def filter(record: Any) -> bool:
        return "ReplayMissError" not in str(record.getMessage())


_QUIET_INSTALLED = False


@contextmanager
def activate(replay: Replay) -> Iterator[Replay]:
    global _QUIET_INSTALLED
    ensure_hook()
    if not _QUIET_INSTALLED:
        import logging

        logging.getLogger("langchain_core.callbacks.manager").addFilter(_QuietMiss())
        _QUIET_INSTALLED = True
    token = _REPLAY.set(replay)
    try:
        yield replay
    finally:
        _REPLAY.reset(token)


_SAFE_ERRORS = {
    name: obj
    for name, obj in __import__("builtins").__dict__.items()
    if isinstance(obj, type) and issubclass(obj, Exception)
}


def rebuild_error(kind: str, message: str) -> BaseException:
    """The exception a recorded tool or model call raised, as a builtin or a ToolException
    (by name from a fixed list: nothing named by the data is imported)."""
    short = kind.rsplit(".", 1)[-1]
    if short in _SAFE_ERRORS and kind in (short, f"builtins.{short}"):
        try:
            return _SAFE_ERRORS[short](message)
        except Exception:
            pass
    if kind == "langchain_core.tools.base.ToolException":
        from langchain_core.tools import ToolException

        return ToolException(message)
    return RecordedToolError(f"{kind}: {message}")


# -- the saver's side: pending calls, their blobs, reading them back ---------------


def _summary(value: Any, limit: int = 80) -> str:
    """One line for people: a message's text and tool calls, or a value."""
    if isinstance(value, BaseMessage):
        text = value.content if isinstance(value.content, str) else json.dumps(to_plain(value.content))
        calls = getattr(value, "tool_calls", None) or []
        if calls:
            text = (text + " " if text else "") + " ".join(
                f"→{c.get('name')}({json.dumps(to_plain(c.get('args')), ensure_ascii=False)})" for c in calls
            )
    else:
        text = value if isinstance(value, str) else json.dumps(to_plain(value), ensure_ascii=False)
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class SaverRecording:
    """A saver's recorded calls: those waiting for their task's ``put_writes``,
    the channel values of recent checkpoints (so a prompt can point at them),
    and reading recorded calls back."""

    def __init__(self, saver: Any) -> None:
        self.saver = saver
        self._pending: dict[tuple[str, str], list[dict]] = {}
        self._values: dict[tuple[str, str, str], tuple[dict, dict | None]] = {}
        self._latest: dict[tuple[str, str], str] = {}
        self._older: dict[tuple[str, str], str] = {}  # the checkpoint put before the latest
        self._lock = threading.Lock()

    def file(self, thread_id: str, task_id: str, record: dict) -> None:
        with self._lock:
            self._pending.setdefault((thread_id, task_id), []).append(record)
            if len(self._pending) > 4096:  # tasks that never wrote (a crashed run): drop the oldest
                del self._pending[next(iter(self._pending))]

    def take(self, thread_id: str, task_id: str) -> list[dict]:
        if not self._pending:
            return []
        with self._lock:
            return self._pending.pop((thread_id, task_id), [])

    def blobs(self, thread_id: str, ns: str, cid: str, task_id: str) -> list[bytes]:
        """The blobs of a task's recorded calls (a call that cannot be encoded is
        left out with a warning: a recording never fails the run)."""
        out = []
        for record in self.take(thread_id, task_id):
            try:
                out.append(self.encode(thread_id, ns, cid, record))
            except Exception as exc:
                warnings.warn(
                    f"gitckpt: a {record.get('kind')} call of node {record.get('node')!r} "
                    f"could not be recorded ({exc})",
                    stacklevel=2,
                )
        return out

    def remember(self, thread_id: str, ns: str, cid: str, values: dict) -> None:
        """The channel values LangGraph put for a checkpoint (the objects its tasks read).

        Only the newest few of a namespace are kept: a task's calls reach the saver
        before the next checkpoint of its namespace is put, or soon after. Each kept
        checkpoint holds a whole message list alive (LangGraph hands out copies),
        which the garbage collector walks: 64 of a long chat's made a turn slower."""
        with self._lock:
            self._values[(thread_id, ns, cid)] = (values, None)
            prev = self._latest.get((thread_id, ns))
            self._latest[(thread_id, ns)] = cid
            older = self._older.get((thread_id, ns))
            if prev is not None and prev != cid:
                self._older[(thread_id, ns)] = prev
                if older is not None and older not in (prev, cid):
                    self._values.pop((thread_id, ns, older), None)
            while len(self._older) > 64:
                del self._older[next(iter(self._older))]
            while len(self._values) > 64:
                del self._values[next(iter(self._values))]
            while len(self._latest) > 64:
                del self._latest[next(iter(self._latest))]

    def _source(self, thread_id: str, ns: str, cid: str) -> tuple[str, dict[int, tuple[str, int]]]:
        """The checkpoint a prompt's messages are looked up in, and their positions:
        the task's own checkpoint; if LangGraph has not put it yet (its put runs in
        the background, durability="async"), the newest one put on that namespace
        (an ancestor: its messages are a prefix of the task's)."""
        pos = self._positions(thread_id, ns, cid)
        if pos:
            return cid, pos
        other = self._latest.get((thread_id, ns))
        if other is None or other == cid or other > cid:
            return cid, pos
        return other, self._positions(thread_id, ns, other)

    def _positions(self, thread_id: str, ns: str, cid: str) -> dict[int, tuple[str, int]]:
        with self._lock:
            item = self._values.get((thread_id, ns, cid))
            if item is None:
                return {}
            values, pos = item
            if pos is None:
                pos = {}
                for ch, v in values.items():
                    if type(v) is list and v and isinstance(v[0], BaseMessage):
                        for i, m in enumerate(v):
                            pos.setdefault(id(m), (ch, i))
                self._values[(thread_id, ns, cid)] = (values, pos)
            return pos

    def encode(self, thread_id: str, ns: str, cid: str, record: dict) -> bytes:
        """The blob of one call. A prompt's messages that are items of the
        checkpoint's own channels are stored as ``["ref", channel, start, stop]``
        (the checkpoint is in the history already), the others inline."""
        dumps = self.saver.serde.dumps_typed
        out: dict[str, Any] = {
            "v": 1,
            "kind": record["kind"],
            "name": record.get("name"),
            "node": record.get("node"),
            "step": record.get("step"),
            "path": record.get("path") or [],
            "ns": record.get("ns") or "",
            "task": record.get("task"),
            "n": record.get("n", 0),
            "digest": record.get("digest"),
            "replayed": bool(record.get("replayed")),
        }
        asked = record.get("input")
        if record["kind"] == "model":
            assert isinstance(asked, ModelAsk)
            out["settings"] = asked.settings
            objects = asked.objects
            source, pos = self._source(thread_id, ns, cid) if objects else (cid, {})
            tail = [] if source == cid else [source]  # a ref into another checkpoint names it
            segments: list[list] = []
            inline: list = []
            for m in objects:
                loc = pos.get(id(m))
                last = segments[-1] if segments else None
                if loc is not None and last and last[0] == "ref" and last[1] == loc[0] and last[3] == loc[1]:
                    last[3] += 1
                elif loc is not None:
                    segments.append(["ref", loc[0], loc[1], loc[1] + 1, *tail])
                else:
                    inline.append(normalize_message(m))
                    segments.append(["msg", len(inline) - 1])
            out["prompt"], out["inline"] = segments, inline
        else:
            out["args"] = (asked or {}).get("args")
        output, error = record.get("output"), record.get("error")
        if error is not None:
            out["error"] = [
                f"{type(error).__module__}.{type(error).__qualname__}".removeprefix("builtins."),
                str(error),
            ]
            out["summary"] = f"error: {_summary(str(error))}"
        else:
            try:
                out["output"] = list(dumps(output))
            except Exception as exc:  # an answer the serializer cannot store: keep its text
                out["output"] = list(dumps(str(output)))
                out["output_note"] = f"stored as text: {exc}"
            out["summary"] = _summary(output)
        return fmt.pack_call(out)

    # reading back

    def calls(self, thread_id: str, *, ns: str | None = None) -> list[dict]:
        """Every recorded call of a thread (every line; one namespace if given),
        in checkpoint order, then task, then order in the task."""
        saver = self.saver
        out = []
        with saver.lock:
            idx = saver.indexes.get(thread_id)
            keys = sorted(k for k in idx.writes if (ns is None or k[0] == ns) and k in idx.ckpt)
            for key in keys:
                blobs = saver.indexes.write_blobs(idx.writes[key], key[1], calls=None)
                for name, data in fmt.read_call_blobs(saver.repo, blobs):
                    data["checkpoint_ns"], data["checkpoint_id"], data["entry"] = key[0], key[1], name
                    data["thread_id"] = thread_id
                    out.append(data)
        return out

    def replay(self, thread_id: str, *, ns: str | None = None, on_miss: str = "error") -> Replay:
        calls = self.calls(thread_id, ns=ns)
        loader = _Loader(self.saver, thread_id)
        recs = [RecordedCall(c, (c["checkpoint_id"], c.get("step") or 0, c["entry"]), loader) for c in calls]
        return Replay(recs, on_miss)


class _Loader:
    """Reads a recorded call's input and output back when a replay needs them."""

    def __init__(self, saver: Any, thread_id: str) -> None:
        self.saver, self.thread_id = saver, thread_id
        self._values: dict[tuple[str, str], dict] = {}

    def input_of(self, call: RecordedCall) -> dict:
        return resolve_input(self.saver, call.data, self._values)

    def output_of(self, call: RecordedCall) -> tuple[Any, BaseException | None]:
        data = call.data
        if data.get("error"):
            kind, message = data["error"]
            return None, rebuild_error(kind, message)
        kind, payload = data["output"]
        return self.saver.serde.loads_typed((kind, payload)), None


def resolve_input(saver: Any, data: dict, cache: dict | None = None) -> dict:
    """A recorded call's normalised input, with prompt references read from its checkpoint."""
    if data.get("kind") != "model":
        return {"name": data.get("name"), "args": data.get("args")}
    cache = {} if cache is None else cache
    messages: list = []
    for seg in data.get("prompt") or []:
        if seg[0] == "msg":
            messages.append(data["inline"][seg[1]])
            continue
        # ["ref", channel, start, stop] into the call's own checkpoint, or with a 5th
        # element, the checkpoint (an ancestor) it points into
        key = (data["checkpoint_ns"], seg[4] if len(seg) > 4 else data["checkpoint_id"])
        if key not in cache:
            tup = saver.get_tuple(
                {"configurable": {"thread_id": data["thread_id"], "checkpoint_ns": key[0], "checkpoint_id": key[1]}}
            )
            cache[key] = tup.checkpoint["channel_values"] if tup else {}
        items = cache[key].get(seg[1]) or []
        messages.extend(normalize_message(m) for m in items[seg[2] : seg[3]])
    return {"messages": messages, "settings": data.get("settings") or {}}
