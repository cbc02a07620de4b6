"""Profile a saver's or store's calls on whatever thread they run.

pyinstrument profiles one thread, but LangGraph calls a checkpointer's ``put``
and ``put_writes`` from its background executor. So each call of the wrapped
methods is profiled in the thread that runs it, and the sessions are merged
into one tree rooted at the method (``put``, ``put_writes``, ...), with the
thread and executor frames above it removed.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pyinstrument import Profiler
from pyinstrument.renderers import ConsoleRenderer
from pyinstrument.session import Session

_MARK = "_bench_profiled_call"
_ROOT = "all gitckpt calls\x00<bench>\x000"

SAVER_METHODS = ("put", "put_writes", "get_tuple", "list", "get_delta_channel_history")
STORE_METHODS = ("batch",)


class _VisibleLock:
    """The same lock, entered through a Python frame, so that a profile shows
    the time a call waits for it (``with lock:`` on a C lock shows as [self])."""

    def __init__(self, lock: Any) -> None:
        self._inner = lock

    def __enter__(self) -> Any:
        return self.wait_for_lock()

    def wait_for_lock(self) -> Any:
        return self._inner.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self._inner.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class CallProfiler:
    """``per_call=True``: a profiler per call, on the thread that runs it (for
    calls made from LangGraph's executor threads). ``per_call=False``: one
    profiler on the calling thread between :meth:`start` and :meth:`stop`, for
    scenarios that call gitckpt directly (short calls get sampled properly)."""

    def __init__(self, interval: float = 0.0002, per_call: bool = True) -> None:
        self.interval = interval if per_call else min(interval, 0.0001)
        self.per_call = per_call
        self._main: Profiler | None = None
        self.sessions: list[Session] = []
        self.calls: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()
        self._local = threading.local()
        self.wall = 0.0
        self._t0: float | None = None

    def start(self) -> None:
        self._t0 = time.perf_counter()
        if not self.per_call:
            self._main = Profiler(interval=self.interval, async_mode="disabled")
            self._main.start()

    def stop(self) -> None:
        if self._main is not None:
            self._main.stop()
            if self._main.last_session is not None:
                self.sessions.append(self._main.last_session)
            self._main = None
        if self._t0 is not None:
            self.wall += time.perf_counter() - self._t0
            self._t0 = None

    def install(self, obj: Any, methods: tuple[str, ...]) -> None:
        already = getattr(obj, "_bench_profiler", None) is not None
        obj._bench_profiler = self  # the wrappers report to the latest profiler installed
        if already:
            return
        for attr in ("lock", "_lock"):  # make time spent waiting for the lock visible
            lk = getattr(obj, attr, None)
            if lk is not None and hasattr(lk, "acquire") and not isinstance(lk, _VisibleLock):
                setattr(obj, attr, _VisibleLock(lk))
        for name in methods:
            original = getattr(obj, name, None)
            if original is None:
                continue
            setattr(obj, name, self._wrap(obj, name, original))

    def _wrap(self, obj: Any, name: str, original: Any) -> Any:
        def _bench_profiled_call(*args: Any, **kwargs: Any) -> Any:
            prof = obj._bench_profiler
            if getattr(prof._local, "active", False):
                return original(*args, **kwargs)
            prof._local.active = True
            p = Profiler(interval=prof.interval, async_mode="disabled") if prof.per_call else None
            t = time.perf_counter()
            if p is not None:
                p.start()
            try:
                out = original(*args, **kwargs)
                if name == "list":  # a generator: do its work inside the profile
                    out = iter(list(out))
                return out
            finally:
                if p is not None:
                    p.stop()
                dt = time.perf_counter() - t
                prof._local.active = False
                with prof._lock:
                    if p is not None and p.last_session is not None:
                        prof.sessions.append(p.last_session)
                    prof.calls[name] = prof.calls.get(name, 0) + 1
                    prof.seconds[name] = prof.seconds.get(name, 0.0) + dt

        _bench_profiled_call.__name__ = _MARK
        return _bench_profiled_call

    def session(self) -> Session | None:
        if not self.sessions:
            return None
        records = []
        duration = cpu = 0.0
        samples = 0
        for s in self.sessions:
            duration += s.duration
            cpu += s.cpu_time
            samples += s.sample_count
            for stack, t in s.frame_records:
                cut = next((i for i, f in enumerate(stack) if f.startswith(_MARK + "\x00")), None)
                if cut is None and not self.per_call:
                    continue  # the benchmark's own loop, outside any gitckpt call
                if cut is not None and len(stack) > cut + 1 and "pyinstrument" in stack[cut + 1]:
                    continue  # the profiler stopping itself
                records.append(([_ROOT] + (stack[cut + 1 :] if cut is not None else stack), t))
        first = self.sessions[0]
        return Session(
            frame_records=records,
            start_time=first.start_time,
            duration=duration,
            min_interval=min(s.min_interval for s in self.sessions),
            max_interval=max(s.max_interval for s in self.sessions),
            sample_count=samples,
            start_call_stack=[_ROOT],
            target_description="gitckpt calls (all threads)",
            cpu_time=cpu,
            sys_path=first.sys_path,
            sys_prefixes=first.sys_prefixes,
        )

    def summary(self) -> str:
        lines = [f"wall time of the profiled run: {self.wall:.3f} s"]
        total = sum(self.seconds.values())
        lines.append(f"time inside gitckpt calls (summed over threads): {total:.3f} s")
        for name in sorted(self.seconds, key=lambda n: -self.seconds[n]):
            n = self.calls[name]
            lines.append(f"  {name:<28} {n:>7} calls  {self.seconds[name]:8.3f} s  {self.seconds[name] / n * 1e6:9.1f} µs/call")
        return "\n".join(lines)

    def render(self, tree_lines: int = 60, flat_lines: int = 15) -> tuple[str, str]:
        """(full text, top lines for the docs)."""
        session = self.session()
        if session is None:
            return "no calls were profiled\n", "no calls were profiled"
        opts = {"filter_threshold": 0.02}  # hide frames under 2% of the total: a readable tree
        tree = ConsoleRenderer(unicode=False, color=False, processor_options=opts).render(session)
        flat = ConsoleRenderer(unicode=False, color=False, flat=True, flat_time="self").render(session)
        full = f"{self.summary()}\n\n== call tree ==\n{tree}\n== by self time ==\n{flat}"
        tree_body = [ln for ln in tree.splitlines() if ln.strip()]
        # skip pyinstrument's banner (the first lines up to the 'Profile at' / target line)
        start = next((i for i, ln in enumerate(tree_body) if ln.lstrip()[:1].isdigit()), 0)
        flat_body = [ln for ln in flat.splitlines() if ln.strip()]
        fstart = next((i for i, ln in enumerate(flat_body) if ln.lstrip()[:1].isdigit()), 0)
        top = (
            f"{self.summary()}\n\ncall tree (top):\n"
            + "\n".join(tree_body[start : start + tree_lines])
            + "\n\nby self time (top):\n"
            + "\n".join(flat_body[fstart : fstart + flat_lines])
        )
        return full, top
