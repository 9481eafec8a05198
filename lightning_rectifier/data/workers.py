"""Worker processes for the package's own functions, started as ``python -m`` and never importing the caller's script.

``multiprocessing``'s ``spawn`` and ``forkserver`` start methods import the parent's ``__main__`` module in every child,
so a training script without an ``if __name__ == "__main__":`` guard would run again inside each worker (and crash the
pool); ``fork`` copies a process that may hold threads and a CUDA context. :class:`WorkerPool` starts each worker as
``python -m lightning_rectifier.data.workers`` instead: a fresh interpreter that imports only the module of the function
it is asked to run (the cache builder's workers never import torch), with one BLAS/OpenMP thread (the pool is the
parallelism), fed tasks over a pipe.

Example:
    >>> with WorkerPool(2) as pool:
    ...     sorted(pool.imap_unordered(math.factorial, [3, 4, 5]))
    ...     list(pool.imap(abs, iter([-2, -1, 0]), window=2))
    [(0, 6), (1, 24), (2, 120)]
    [(0, 2), (1, 1), (2, 0)]
"""

from __future__ import annotations

import contextlib
import importlib
import math  # noqa: F401  (the doctest's function: any importable module-level function will do)
import os
import pickle
import selectors
import signal
import struct
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["WorkerCrashed", "WorkerPool"]

_LENGTH = struct.Struct("<Q")


class WorkerCrashed(RuntimeError):
    """A worker process ended (killed, out of memory, a crash in native code) before answering.

    Attributes:
        index: The position of the item it was running in the input.
    """

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


def _send(fd: int, payload: bytes) -> None:
    data = memoryview(_LENGTH.pack(len(payload)) + payload)
    while data:
        data = data[os.write(fd, data) :]


def _receive(fd: int) -> bytes | None:
    """One message, or None at the end of the pipe (the other side exited)."""
    head = _read_exactly(fd, _LENGTH.size)
    if head is None:
        return None
    return _read_exactly(fd, _LENGTH.unpack(head)[0])


def _read_exactly(fd: int, count: int) -> bytes | None:
    parts, left = [], count
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


class _Worker:
    def __init__(self, preload: Sequence[str]) -> None:
        task_read, self.task_write = os.pipe()
        self.result_read, result_write = os.pipe()
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # the folder holding this package, installed or not
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = "1"
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(task_read), str(result_write), *preload],
            pass_fds=(task_read, result_write),
            env=env,
            stdin=subprocess.DEVNULL,
        )
        os.close(task_read)
        os.close(result_write)
        self.index = -1

    def close(self, kill: bool) -> None:
        for fd in (self.task_write, self.result_read):
            with contextlib.suppress(OSError):  # closed already
                os.close(fd)
        if kill and self.process.poll() is None:
            self.process.kill()
        self.process.wait()


class WorkerPool:
    """A fixed set of worker processes running module-level functions of importable modules.

    Args:
        workers: How many processes.
        initializer: Called once in each worker, with ``initargs``, before its first task (e.g. to load a decoding
            graph into a module-level variable that the tasks' function reads). An exception it raises is raised
            here, from the constructor.
        initargs: Its arguments (pickled once, sent to every worker).
        preload: Modules each worker imports as it starts, before its first task. The constructor does not wait
            for them (unlike an initializer): started early, the workers import while the caller does other work.

    Use as a context manager (the workers are stopped on leaving it, killed if it is left by an exception). Items are
    taken from the input only as workers are free, so a lazy iterator is read as the work goes.
    """

    def __init__(
        self,
        workers: int,
        initializer: Callable[..., Any] | None = None,
        initargs: tuple[Any, ...] = (),
        preload: Sequence[str] = (),
    ) -> None:
        if workers < 1:
            raise ValueError(f"expected at least one worker, got {workers}")
        self._workers = [_Worker(preload) for _ in range(workers)]
        if initializer is not None:
            try:  # every worker starts its initializer before any is waited for: they run side by side
                task = pickle.dumps((_initialize, (initializer, initargs)), protocol=pickle.HIGHEST_PROTOCOL)
                for worker in self._workers:
                    _send(worker.task_write, task)
                for worker in self._workers:
                    _answer(worker, initializer, "its initializer")
            except BaseException:
                self.close(kill=True)
                raise

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        self.close(kill=kind is not None)

    @property
    def size(self) -> int:
        """The number of worker processes (0 once closed)."""
        return len(self._workers)

    def close(self, kill: bool = False) -> None:
        """Stops the workers (ending their input lets them exit; ``kill`` does not wait for them to finish)."""
        for worker in self._workers:
            worker.close(kill)
        self._workers = []

    def imap_unordered(self, function: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        """Runs ``function(item)`` for every item in the workers; yields ``(index of the item, result)`` as each ends.

        Raises:
            Exception: The first exception a call raised (or reading ``items`` raised), re-raised here; items not
                yet started are not started.
            WorkerCrashed: A worker ended without answering.
        """
        return self._run(function, items, window=0)

    def imap(self, function: Callable[[Any], Any], items: Iterable[Any], window: int = 0) -> Iterator[tuple[int, Any]]:
        """As :meth:`imap_unordered`, but yields in input order.

        Args:
            function: A module-level function of an importable module.
            items: Its arguments, read as the work goes.
            window: At most this many items are taken from ``items`` and not yet yielded (running, or done and
                waiting for an earlier one); 0 means twice the number of workers. Bounds the memory held when one
                item is slow.
        """
        return self._run(function, items, window=window or 2 * len(self._workers), ordered=True)

    def _run(
        self, function: Callable[[Any], Any], items: Iterable[Any], window: int, ordered: bool = False
    ) -> Iterator[tuple[int, Any]]:
        if not self._workers:
            raise RuntimeError("the pool is closed")
        if ordered and window < 1:
            raise ValueError(f"expected a window of at least one item, got {window}")
        source = enumerate(items)
        selector = selectors.DefaultSelector()
        finished: dict[int, Any] = {}  # ordered: results waiting for an earlier item
        taken = yielded = 0
        try:
            idle = list(self._workers)
            exhausted = False
            while True:
                while idle and not exhausted and (not ordered or taken - yielded < window):
                    try:
                        index, item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    taken += 1
                    worker = idle.pop()
                    worker.index = index
                    _send(worker.task_write, pickle.dumps((function, item), protocol=pickle.HIGHEST_PROTOCOL))
                    selector.register(worker.result_read, selectors.EVENT_READ, worker)
                if len(idle) == len(self._workers):  # nothing running: all taken items are done
                    break
                for key, _ in selector.select():
                    worker = key.data
                    selector.unregister(worker.result_read)
                    value = _answer(worker, function, f"item {worker.index}")
                    idle.append(worker)
                    if not ordered:
                        yielded += 1
                        yield worker.index, value
                        continue
                    finished[worker.index] = value
                    while yielded in finished:
                        yield yielded, finished.pop(yielded)
                        yielded += 1
        except BaseException:
            self.close(kill=True)  # the others' work is abandoned, not waited for
            raise
        finally:
            selector.close()


def _answer(worker: _Worker, function: Callable[..., Any], running: str) -> Any:
    """A worker's answer to its task: the result, or its exception raised here."""
    message = _receive(worker.result_read)
    if message is None:
        code = worker.process.wait()
        raise WorkerCrashed(
            f"a worker process (pid {worker.process.pid}) ended with exit code {code} while running"
            f" {getattr(function, '__qualname__', function)!s} on {running}",
            worker.index,
        )
    status, value = pickle.loads(message)
    if status == "error":
        raise value
    return value


def _initialize(task: tuple[Callable[..., Any], tuple[Any, ...]]) -> None:
    initializer, initargs = task
    initializer(*initargs)


def _serve(task_fd: int, result_fd: int, preload: Sequence[str] = ()) -> None:
    """A worker's loop: import ``preload``, then run each task received, send back its result or its exception."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
    for module in preload:
        with contextlib.suppress(Exception):  # a task that needs it imports it again and sends that error back
            importlib.import_module(module)
    while (message := _receive(task_fd)) is not None:
        try:
            function, item = pickle.loads(message)
            answer = ("ok", function(item))
        except Exception as error:  # sent to the parent, which re-raises it
            answer = ("error", error)
        try:
            payload = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:  # an exception that cannot be pickled: send its text
            text = "".join(traceback.format_exception(answer[1])) if answer[0] == "error" else "an unpicklable result"
            payload = pickle.dumps(("error", RuntimeError(f"in a worker process: {text}")))
        _send(result_fd, payload)


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
