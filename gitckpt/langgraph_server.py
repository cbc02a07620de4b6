"""gitckpt as the checkpointer and store of ``langgraph dev`` (LangGraph's Agent Server).

In a project's ``langgraph.json`` (``gitckpt server init`` writes these)::

    "checkpointer": {"path": "gitckpt.langgraph_server.checkpointer"},
    "store": {"path": "gitckpt.langgraph_server.store"}

The server calls each and enters what it returns, an async context manager,
once per event-loop thread; one ``GitSaver`` and one ``GitStore`` per process
serve them all until the server stops. Both are configured from the
environment (the shell, or the ``env`` of ``langgraph.json``) when first
entered:

``GITCKPT_REPO``
    The repository. Default: :func:`default_repo`, a folder *outside* the
    project, because ``langgraph dev`` watches the whole project folder and
    every git write inside it would wake its file watcher.
``GITCKPT_DURABILITY``
    ``os`` (default) or ``fsync`` (see ``GitSaver``).
``GITCKPT_ALLOW``
    The msgpack allowlist of the serializer: ``module:Name,module:Name``; the
    checkpoints then decode only LangGraph's safe types and these (LangGraph's
    strict mode). ``strict`` alone: the safe types only. Unset: LangGraph's
    default serializer (strict only if ``LANGGRAPH_STRICT_MSGPACK`` is set).
``GITCKPT_SERDE``
    The serializer, as for the ``gitckpt`` command: ``aes`` or
    ``FILE.py:ATTR`` / ``module.name:ATTR``.
``GITCKPT_RECORD``
    ``1``: record every model and tool call of the runs the server makes
    (``GitSaver(record=True)``), for ``gitckpt replay --offline`` and
    ``gitckpt reproduce``.

The ``index`` (semantic search) and ``ttl`` of the ``store`` entry of
``langgraph.json`` configure the ``GitStore`` as they would the server's own.

This module imports nothing heavy until the server enters an entry point.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

REPO_ENV = "GITCKPT_REPO"
DURABILITY_ENV = "GITCKPT_DURABILITY"
ALLOW_ENV = "GITCKPT_ALLOW"
SERDE_ENV = "GITCKPT_SERDE"
RECORD_ENV = "GITCKPT_RECORD"
#: Where the server puts langgraph.json's ``store`` entry, as JSON.
STORE_CONFIG_ENV = "LANGGRAPH_STORE"

#: The import paths ``langgraph.json`` names. The Agent Server imports a path
#: without a ``/`` as ``module.attr`` (it splits at the last dot), so the
#: ``module:attr`` spelling does not load there.
CHECKPOINTER_PATH = "gitckpt.langgraph_server.checkpointer"
STORE_PATH = "gitckpt.langgraph_server.store"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def _data_home() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    return Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "share"


def default_repo(project: str | os.PathLike | None = None) -> Path:
    """The repository of the project folder ``project`` (default: the working directory).

    ``$XDG_DATA_HOME/gitckpt/projects/<folder name>-<8 hex digits>``
    (``~/.local/share/...`` when ``XDG_DATA_HOME`` is unset), the digits from
    the folder's absolute path: one repository per project, outside the tree
    ``langgraph dev`` watches. Moving the project folder changes it; set
    ``GITCKPT_REPO`` to keep one place.
    """
    folder = Path(project if project is not None else os.getcwd()).expanduser().resolve()
    digest = hashlib.sha256(os.fsencode(str(folder))).hexdigest()[:8]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in folder.name) or "root"
    return _data_home() / "gitckpt" / "projects" / f"{name}-{digest}"


def repo_path() -> Path:
    """``$GITCKPT_REPO`` (relative to the working directory), else :func:`default_repo`."""
    value = os.environ.get(REPO_ENV, "").strip()
    return Path(value).expanduser().absolute() if value else default_repo()


def _read_config(config: Path) -> dict[str, Any]:
    """``langgraph.json`` as a dict; a clear error when it is not a JSON object."""
    import json

    from .errors import InvalidInputError

    try:
        text = config.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{config} is not UTF-8 text: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{config} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; "
            "fix it (nothing was changed)"
        ) from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{config} holds a JSON {type(data).__name__}, not an object (nothing was changed)")
    return data


def uses_gitckpt(data: dict[str, Any]) -> bool:
    """Whether a ``langgraph.json`` (as a dict) names gitckpt's checkpointer or store."""
    return any(
        isinstance(data.get(key), dict) and data[key].get("path") == path
        for key, path in (("checkpointer", CHECKPOINTER_PATH), ("store", STORE_PATH))
    )


def _env_file_value(path: Path, key: str) -> str | None:
    """``key``'s value in a ``.env`` file (``KEY=value``, optional ``export`` and quotes)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    found = None
    for line in lines:
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        name, sep, value = line.partition("=")
        if sep and name.strip() == key:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            found = value
    return found


def _configured_repo(folder: Path, data: dict[str, Any]) -> Path | None:
    """``GITCKPT_REPO`` as the ``env`` of a langgraph.json sets it (a mapping or a .env file)."""
    env = data.get("env")
    if isinstance(env, dict):
        value = env.get(REPO_ENV)
    elif isinstance(env, str) and env.strip():
        value = _env_file_value(folder / env.strip(), REPO_ENV)
    else:
        value = None
    if not isinstance(value, str) or not value.strip():
        return None
    path = Path(value.strip()).expanduser()
    return (path if path.is_absolute() else folder.absolute() / path).absolute()


def project_repo(folder: str | os.PathLike) -> Path | None:
    """The repository ``langgraph dev`` run in ``folder`` writes, if its langgraph.json names gitckpt.

    ``GITCKPT_REPO`` from the file's ``env`` (a mapping, or a ``.env`` file it
    names), else :func:`default_repo`. None when there is no such
    ``langgraph.json``; an unreadable one is not an error here (the
    ``gitckpt`` command falls back to its own default).
    """
    folder = Path(folder)
    config = folder / "langgraph.json"
    if not config.is_file():
        return None
    try:
        data = _read_config(config)
    except Exception:
        return None
    if not uses_gitckpt(data):
        return None
    return _configured_repo(folder, data) or default_repo(folder)


def init_config(config: str | os.PathLike, *, force: bool = False, repo: str | None = None) -> dict[str, Any]:
    """Point ``config`` (a ``langgraph.json``) at gitckpt's checkpointer and store.

    Creates the file if it is missing (``dependencies: ["."]``, no graphs yet).
    Keeps every other key, and the other keys of an existing ``checkpointer``
    or ``store`` entry (``ttl``, ``serde``, ``index``); refuses to replace a
    different ``path`` there unless ``force``. ``repo``: also set
    ``GITCKPT_REPO`` in the file's ``env`` (a path relative to the file's
    folder, where ``langgraph dev`` runs, stays relative). The file is
    rewritten with two spaces of indentation, atomically.

    Returns ``{"created": bool, "changed": [keys], "repository": Path}``.
    """
    import json

    from .errors import InvalidInputError

    config = Path(config)
    created = not config.exists()
    if created:
        if not config.parent.is_dir():
            raise InvalidInputError(f"cannot create {config}: the folder {config.parent} does not exist")
        data: dict[str, Any] = {"dependencies": ["."], "graphs": {}}
    elif config.is_dir():
        raise InvalidInputError(f"{config} is a folder; give the path of langgraph.json")
    else:
        data = _read_config(config)
    changed: list[str] = []
    for key, path in (("checkpointer", CHECKPOINTER_PATH), ("store", STORE_PATH)):
        entry = data.get(key)
        if entry is None:
            data[key] = {"path": path}
        elif not isinstance(entry, dict):
            if not force:
                raise InvalidInputError(
                    f"{config}: {key!r} is a JSON {type(entry).__name__}, not an object with a path; "
                    "fix it or pass --force to replace it (nothing was changed)"
                )
            data[key] = {"path": path}
        elif entry.get("path") == path:
            continue
        elif entry.get("path") and not force:
            raise InvalidInputError(
                f"{config} already has a {key} ({entry['path']!r}); pass --force to replace it with "
                f"gitckpt's (nothing was changed)"
            )
        else:
            data[key] = {**entry, "path": path}
            if entry.get("backend") not in (None, "custom"):
                data[key].pop("backend")
        changed.append(key)
    if repo is not None:
        if not repo.strip():
            raise InvalidInputError("--repo needs a path")
        env = data.get("env")
        if isinstance(env, str):
            raise InvalidInputError(
                f"{config}: env names the file {env!r}; put {REPO_ENV}={repo} in that file instead "
                "(nothing was changed)"
            )
        if env is not None and not isinstance(env, dict):
            raise InvalidInputError(
                f"{config}: env is a JSON {type(env).__name__}, not an object (nothing was changed)"
            )
        if (env or {}).get(REPO_ENV) != repo:
            data["env"] = {**(env or {}), REPO_ENV: repo}
            changed.append("env")
    if changed or created:
        text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
        tmp = config.with_name(f".{config.name}.gitckpt-tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, config)
    # the server lets langgraph.json's env override the shell's
    folder = config.parent
    shell = os.environ.get(REPO_ENV, "").strip()
    repository = (
        _configured_repo(folder, data)
        or (folder.absolute() / Path(shell).expanduser() if shell else None)
        or default_repo(folder)
    )
    return {"created": created, "changed": changed, "repository": repository}


def _durability() -> str:
    value = os.environ.get(DURABILITY_ENV, "").strip().lower() or "os"
    if value not in ("os", "fsync"):
        from .errors import InvalidInputError

        raise InvalidInputError(f"${DURABILITY_ENV} must be 'os' or 'fsync', not {value!r}")
    return value


def _record() -> bool:
    value = os.environ.get(RECORD_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    from .errors import InvalidInputError

    raise InvalidInputError(f"${RECORD_ENV} must be 1 or 0 (true/false), not {value!r}")


def parse_allowlist(value: str) -> list[tuple[str, str]]:
    """``"module:Name,module.sub:Other"`` as ``[("module", "Name"), ...]``; ``"strict"``: ``[]``."""
    from .errors import InvalidInputError

    value = value.strip()
    if value.lower() == "strict":
        return []
    from .trust import parse_allow  # the CLI's --allow rule, so both accept the same names

    allowed: list[tuple[str, str]] = []
    for item in value.split(","):
        if item.strip():
            try:
                allowed.append(parse_allow(item))
            except InvalidInputError as exc:
                raise InvalidInputError(
                    f"${ALLOW_ENV}: {exc} (a list is module:Name,module:Name; "
                    "'strict' allows LangGraph's safe types only)"
                ) from None
    if not allowed:
        raise InvalidInputError(f"${ALLOW_ENV} is set but names no type: give module:Name,... or 'strict'")
    return allowed


def serializer() -> Any:
    """The serializer ``GITCKPT_SERDE`` / ``GITCKPT_ALLOW`` name; None: LangGraph's default."""
    from .errors import InvalidInputError

    allow = os.environ.get(ALLOW_ENV)
    spec = os.environ.get(SERDE_ENV, "").strip()
    if allow is not None and allow.strip():
        if spec:
            raise InvalidInputError(
                f"${ALLOW_ENV} and ${SERDE_ENV} are both set: give the allowlist to the serializer "
                f"{spec!r} names, or unset {SERDE_ENV}"
            )
        from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

        # an empty list is LangGraph's strict mode: its safe types and nothing else
        return JsonPlusSerializer(allowed_msgpack_modules=parse_allowlist(allow) or None)
    if spec:
        from .ops import load_serializer

        try:
            return load_serializer(spec)
        except InvalidInputError as exc:  # its messages speak of the command's --serde
            raise InvalidInputError(f"${SERDE_ENV}={spec}: {exc}") from None
    return None


def saver_kwargs() -> dict[str, Any]:
    """The ``GitSaver`` arguments the environment asks for (errors name the variable)."""
    kwargs: dict[str, Any] = {"durability": _durability(), "serde": serializer()}
    if _record():
        kwargs["record"] = True
    return kwargs


class _Shared:
    """One opened object per process, whatever the number of enters.

    The server enters an entry point once per thread that asks for it
    (``threading.local`` stacks); one saver serves them all (its async methods
    run the git work in worker threads) and is closed by the last exit.
    """

    def __init__(self, make) -> None:
        self._make = make
        self._lock = threading.Lock()
        self._obj = None
        self._users = 0

    def acquire(self) -> Any:
        with self._lock:
            if self._obj is None:
                self._obj = self._make()
            self._users += 1
            return self._obj

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users > 0 or self._obj is None:
                return
            obj, self._obj = self._obj, None
        obj.close()


def _make_saver() -> Any:
    from .checkpoint.saver import GitSaver

    return GitSaver(repo_path(), **saver_kwargs())


def store_kwargs() -> dict[str, Any]:
    """The ``GitStore`` arguments: durability, and the ``index`` and ``ttl`` of the ``store`` entry.

    The server passes ``langgraph.json``'s ``store`` entry to its process as JSON
    in ``LANGGRAPH_STORE``; a custom store gets nothing else of it, so this reads
    it there. ``index.embed`` is ``provider:model`` (LangChain's
    ``init_embeddings``) or ``FILE.py:ATTR`` / ``module.name:ATTR``, relative to
    the folder the server runs in, as for the server's own store.
    """
    import json

    from .errors import InvalidInputError

    kwargs: dict[str, Any] = {"durability": _durability()}
    raw = os.environ.get(STORE_CONFIG_ENV, "").strip()
    if not raw:
        return kwargs
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"${STORE_CONFIG_ENV} is not JSON: {exc}") from None
    if not isinstance(config, dict):
        return kwargs
    index = config.get("index")
    if index:
        if not isinstance(index, dict) or not index.get("embed") or not index.get("dims"):
            raise InvalidInputError('the "index" of the store in langgraph.json needs "embed" and "dims"')
        index = dict(index)
        if isinstance(index["embed"], str):
            from .ops import load_embeddings

            try:
                index["embed"] = load_embeddings(index["embed"])
            except InvalidInputError as exc:  # its messages speak of the command's --embed
                raise InvalidInputError(f'the "index.embed" of the store in langgraph.json: {exc}') from None
        kwargs["index"] = index
    ttl = config.get("ttl")
    if ttl:
        if not isinstance(ttl, dict):
            raise InvalidInputError('the "ttl" of the store in langgraph.json must be an object')
        kwargs["ttl"] = dict(ttl)
    return kwargs


def _make_store() -> Any:
    from .store.store import GitStore

    return GitStore(repo_path(), **store_kwargs())


_SAVER = _Shared(_make_saver)
_STORE = _Shared(_make_store)


@asynccontextmanager
async def _enter(shared: _Shared) -> AsyncIterator[Any]:
    import asyncio

    obj = await asyncio.to_thread(shared.acquire)
    try:
        yield obj
    finally:
        await asyncio.to_thread(shared.release)


def checkpointer() -> Any:
    """The ``checkpointer`` entry point: an async context manager yielding the ``GitSaver``."""
    return _enter(_SAVER)


def store() -> Any:
    """The ``store`` entry point: an async context manager yielding the ``GitStore``."""
    return _enter(_STORE)
