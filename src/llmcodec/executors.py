"""Where codec jobs run: a local thread pool (default) or Ray workers, behind one small interface.

A job is ``fn(*args)`` with ``fn`` a module-level function (so Ray can ship it by name). An
argument may be a :class:`Lazy` value: the local pool loads it inside the worker thread, so
reading a tensor overlaps with other tensors' encoding and at most ``workers`` loaded tensors
are alive at once; the Ray executor loads it in the driver and ships the value.

Threads are enough locally: the heavy work runs in FFmpeg subprocesses, and numpy releases the
GIL in quantization. Results come back in job order.
"""

from __future__ import annotations

import ctypes
import functools
import os
import socket
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any, Protocol

from threadpoolctl import threadpool_limits

from .codecs.base import EncoderInterrupted, job_stop

EXECUTORS = ("local", "ray")
Done = Callable[[int, Any], None]  # (job index, result), called in the caller's thread as each job finishes


@dataclass(frozen=True)
class Lazy:
    """A value made on demand (e.g. a tensor read from disk); not kept after use."""

    fn: Callable[[], Any]

    def get(self) -> Any:
        return self.fn()


def _resolve(args: tuple) -> tuple:
    return tuple(a.get() if isinstance(a, Lazy) else a for a in args)


def call(fn: Callable, args: tuple) -> Any:
    """Run one job: load its lazy arguments, then call ``fn``."""
    try:
        return fn(*_resolve(args))
    finally:
        release_memory()


@functools.cache
def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6") if sys.platform.startswith("linux") else None
    except OSError:
        return None


def release_memory() -> None:
    """Give memory freed by a finished job back to the OS (glibc only; elsewhere a no-op).

    A job allocates and frees a few copies of one matrix. glibc keeps such freed blocks in its
    heap (its mmap threshold rises after the first large free), so without this the process
    grows with every matrix it has coded.
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def batch_limit(total: int, workers: int, least: int) -> int:
    """Size bound of a batch of ``total`` work for ``workers``: at least ``least``, but large enough
    for about three batches per worker (few process starts, and the last batches end together)."""
    return max(least, -(-total // (3 * workers)))


class Executor(Protocol):
    workers: int

    def map(self, fn: Callable, jobs: Sequence[tuple], done: Done | None = None) -> list: ...

    def close(self) -> None: ...


class LocalExecutor:
    """A thread pool of ``workers`` threads, each driving one codec subprocess at a time."""

    def __init__(self, workers: int = 0) -> None:
        if workers < 0:
            raise ValueError(f"workers must be >= 0 (0: one per core), got {workers}")
        self.workers = workers or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="llmcodec")
        self._stop = threading.Event()
        # One BLAS thread while jobs run (they are parallel already). It also makes float sums such
        # as the stored relative error come out as on Ray workers, which run BLAS on one thread:
        # OpenBLAS splits long dot products by thread count, changing their last bits.
        self._blas = threadpool_limits(limits=1, user_api="blas")

    def _call(self, fn: Callable, args: tuple) -> Any:
        """Run a job unless a Ctrl-C was seen. The worker that sees its encoder die of SIGINT stops
        the pool itself, at once: waiting for the main thread to notice would let idle workers
        start fresh encoders that the signal never reached, and exiting would wait for them."""
        if self._stop.is_set():
            raise EncoderInterrupted("not started: interrupted")
        token = job_stop.set(self._stop)  # an FFmpeg started after the signal went out is killed too
        try:
            return call(fn, args)
        except EncoderInterrupted:
            self._stop.set()
            raise
        finally:
            job_stop.reset(token)

    def map(self, fn: Callable, jobs: Sequence[tuple], done: Done | None = None) -> list:
        """Results in job order; ``done`` sees each as it finishes (e.g. to save it at once).

        On an error, jobs not yet started are cancelled, running ones are finished and reported
        (their work is not lost to a resumed run), then the first error is raised.
        """
        futures = {self._pool.submit(self._call, fn, j): i for i, j in enumerate(jobs)}
        out: list[Any] = [None] * len(futures)
        error: BaseException | None = None
        try:
            for f in as_completed(futures):
                if f.cancelled():
                    continue
                exc = f.exception()
                if exc is not None:
                    if error is None:
                        error = exc
                        for g in futures:
                            g.cancel()
                    continue
                i = futures[f]
                out[i] = f.result()
                if done:
                    done(i, out[i])
        except BaseException:  # Ctrl-C: do not wait for running encoders
            self._stop.set()
            for g in futures:
                g.cancel()
            raise
        if error is not None:
            raise error
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._blas.restore_original_limits()

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RayExecutor:
    """Jobs as Ray tasks of one CPU each, at most ``2 x cluster CPUs`` in flight.

    The bound keeps the driver's memory to a few tensors: each submitted job's arguments are
    loaded in the driver and copied into Ray's object store until the job finishes. Workers
    must have llmcodec (and the same FFmpeg) installed; they need no access to the model files.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None, in_flight: int = 0) -> None:
        try:
            import ray
        except ImportError:
            raise ValueError("--executor ray needs Ray: pip install 'llmcodec[ray]' (or pip install ray)") from None
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns and address:
            _check_reachable(address)
        if self._owns:
            kw: dict[str, Any] = {"address": address, "include_dashboard": False, "log_to_driver": False}
            kw["runtime_env"] = {"env_vars": {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}}
            if address is None and num_cpus is not None:
                kw["num_cpus"] = num_cpus
            try:
                ray.init(**kw)
            except ConnectionError as e:
                raise ValueError(f"cannot reach the Ray cluster at {address!r}: {e}") from None
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.in_flight = in_flight or 2 * self.workers
        self._task = ray.remote(num_cpus=1, max_retries=2)(call)

    def map(self, fn: Callable, jobs: Sequence[tuple], done: Done | None = None) -> list:
        """As :meth:`LocalExecutor.map`; lazy arguments are loaded here, in the driver."""
        ray = self._ray
        out: list[Any] = [None] * len(jobs)
        running: dict[Any, int] = {}  # object ref -> job index
        todo = iter(enumerate(jobs))
        error: BaseException | None = None
        try:
            while True:
                while error is None and len(running) < self.in_flight:
                    nxt = next(todo, None)
                    if nxt is None:
                        break
                    running[self._task.remote(fn, _resolve(nxt[1]))] = nxt[0]
                if not running:
                    break
                ready, _ = ray.wait(list(running), num_returns=1)
                for ref in ready:
                    i = running.pop(ref)
                    try:
                        out[i] = ray.get(ref)
                    except Exception as e:  # a task's error (Ray re-raises it as the original type)
                        error = error or e
                        continue
                    if done:
                        done(i, out[i])
        except BaseException:
            for ref in running:
                ray.cancel(ref, force=True)
            raise
        if error is not None:
            raise error
        return out

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Fail fast on a wrong ``--address``: ray.init would otherwise retry for minutes."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local" and other forms Ray resolves itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        raise ValueError(f"cannot reach the Ray cluster at {address!r}: {e}") from None


def make_executor(kind: str = "local", workers: int = 0, address: str | None = None) -> LocalExecutor | RayExecutor:
    """``local`` (threads on this machine) or ``ray`` (a local Ray instance, or ``address``)."""
    if kind == "local":
        if address:
            raise ValueError("--address is for --executor ray")
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(address, num_cpus=workers or None)
    raise ValueError(f"unknown executor {kind!r}; choose one of {', '.join(EXECUTORS)}")
