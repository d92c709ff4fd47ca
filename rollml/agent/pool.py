"""The bounded pool an agent runs its VM work in."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from collections.abc import Callable
from typing import Any

from rollml.agent.traces import exit_with_parent


class WorkerPool:
    """A bounded pool for VM runs, keyed by job: worker processes (the fast VM's SIGSEGV handler must live in
    a process's main thread), or inline in the caller when `workers == 0` (tests, one-shot runs)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._executor: cf.ProcessPoolExecutor | None = None
        self._futures: dict[Any, cf.Future[Any]] = {}
        self._inline: dict[Any, tuple[Any, BaseException | None]] = {}

    def free(self) -> int:
        """How many more jobs may be submitted now."""
        if self.workers == 0:
            return 1
        return max(0, self.workers - len(self._futures))

    def busy(self, key: Any) -> bool:
        return key in self._futures

    def pending(self) -> int:
        """Jobs submitted whose outcome was not collected yet."""
        return len(self._futures) + len(self._inline)

    def submit(self, key: Any, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` for `key`; collect the outcome with `finished()`."""
        if self.workers == 0:
            try:
                self._inline[key] = (fn(*args), None)
            except Exception as exc:
                self._inline[key] = (None, exc)
            return
        if self._executor is None:
            context = multiprocessing.get_context("spawn")  # no forked copy of a 4 GiB VM mapping or locks
            self._executor = cf.ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=exit_with_parent
            )
        self._futures[key] = self._executor.submit(fn, *args)

    def finished(self) -> list[tuple[Any, Any, BaseException | None]]:
        """(key, result, exception) of every job done since the last call."""
        out = [(k, r, e) for k, (r, e) in self._inline.items()]
        self._inline.clear()
        for key, fut in list(self._futures.items()):
            if fut.done():
                del self._futures[key]
                exc = fut.exception()
                out.append((key, None if exc else fut.result(), exc))
        return out

    def wait(self, timeout: float | None = None) -> None:
        """Block until a submitted job is done (or `timeout` seconds passed)."""
        if self._futures and not self._inline:
            cf.wait(list(self._futures.values()), timeout, return_when=cf.FIRST_COMPLETED)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._futures.clear()
