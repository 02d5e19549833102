"""Where chunks of work run: this process, a local process pool, or a Ray cluster.

Input: a picklable function and one argument tuple per chunk (the chunks ``collect`` and
``annotate`` use anyway). Output: ``(chunk index, result)`` pairs as the chunks finish. The
function must be pure with respect to the filesystem: workers return Arrow tables (or critic
outputs) and only the driver writes, so no shared filesystem is assumed and a killed worker
leaves nothing half written.

- ``local``: one worker runs the chunks in this process, in order; more use a spawn-context
  process pool (``cap_workers`` caps them at the CPUs).
- ``ray``: connects to ``$RAY_ADDRESS`` when it is set, else starts a local Ray limited to
  ``workers`` CPUs, its workers at niceness 0 (Ray's default, 15, starves them beside any busy
  process; start a cluster with ``RAY_worker_niceness=0 ray start ...`` for the same), and stops
  it when done. Each chunk is one task, retried by Ray when its
  worker dies (``RAY_TASK_RETRIES``); the driver stages results as they arrive, so a rerun after
  the driver itself is killed redoes only what was not staged. Needs the ``scale`` extra.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from typing import Any

from llmca_data.config import ConfigError, cap_workers
from llmca_data.extras import require

log = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
RAY_TASK_RETRIES = 3
"""Times Ray re-runs a chunk whose worker process died."""
Chunks = Iterator[tuple[int, Any]]


def check_executor(name: str) -> str:
    """``name`` if it is an executor.

    Raises:
        ConfigError: naming the choices.
        MissingExtraError: ``ray`` without Ray installed (the message says how to install it).
    """
    if name not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
    if name == "ray":
        require("ray", "--executor ray")
    return name


class Executor:
    """Runs chunks on one backend; open it with ``open_executor`` and reuse it for every batch of chunks."""

    def __init__(self, kind: str, workers: int) -> None:
        self.kind, self.workers = kind, workers
        self._pool: ProcessPoolExecutor | None = None
        self._ray_started = False

    def map_unordered(self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> Chunks:
        """``(k, fn(*args[k]))`` for every k, in the order the chunks finish."""
        if self.kind == "ray":
            yield from self._ray_map(fn, args)
        elif self._pool is None or len(args) <= 1:
            yield from ((k, fn(*a)) for k, a in enumerate(args))
        else:
            futures = {self._pool.submit(fn, *a): k for k, a in enumerate(args)}
            try:
                yield from ((futures[f], f.result()) for f in as_completed(futures))
            finally:
                for f in futures:
                    f.cancel()

    def _ray_map(self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> Chunks:
        import ray

        task = ray.remote(num_cpus=1, max_retries=RAY_TASK_RETRIES)(fn)
        refs = {task.remote(*a): k for k, a in enumerate(args)}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                yield refs[done[0]], ray.get(done[0])
        finally:
            for ref in pending:  # left early (an error, an interrupt): stop what nobody waits for
                ray.cancel(ref)

    def _open(self) -> None:
        if self.kind == "local":
            if cap_workers(self.workers) > 1:
                self._pool = ProcessPoolExecutor(
                    cap_workers(self.workers), mp_context=multiprocessing.get_context("spawn")
                )
            return
        import ray

        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS") or None
            # Ray runs its workers at niceness 15; beside any other busy process that makes a chunk ~10-30×
            # slower (measured here), so the local Ray we start runs them at 0, as the local pool's.
            ray.init(address=address, num_cpus=None if address else max(1, self.workers),
                     _system_config=None if address else {"worker_niceness": 0}, include_dashboard=False,
                     log_to_driver=False, logging_level=logging.WARNING)  # fmt: skip
            self._ray_started = True
            log.info("Ray started (%s)", address or f"local, {max(1, self.workers)} CPUs")

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        if self._ray_started:
            import ray

            ray.shutdown()


@contextmanager
def open_executor(kind: str, workers: int) -> Iterator[Executor]:
    """An ``Executor`` of ``kind`` with ``workers`` workers, shut down (a local Ray stopped) on leaving.

    Raises:
        ConfigError: an unknown kind, or ``ray`` without Ray installed.
    """
    executor = Executor(check_executor(kind), workers)
    executor._open()
    try:
        yield executor
    finally:
        executor._close()
