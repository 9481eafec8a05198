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
    [(0, 6), (1, 24), (2, 120)]
"""

from __future__ import annotations

import contextlib
import math  # noqa: F401  (the doctest's function: any importable module-level function will do)
import os
import pickle
import selectors
import signal
import struct
import subprocess
import sys
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
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
    def __init__(self) -> None:
        task_read, self.task_write = os.pipe()
        self.result_read, result_write = os.pipe()
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])  # the folder holding this package, installed or not
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = "1"
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(task_read), str(result_write)],
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

    Use as a context manager (the workers are stopped on leaving it, killed if it is left by an exception).
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"expected at least one worker, got {workers}")
        self._workers = [_Worker() for _ in range(workers)]

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        self.close(kill=kind is not None)

    def close(self, kill: bool = False) -> None:
        """Stops the workers (ending their input lets them exit; ``kill`` does not wait for them to finish)."""
        for worker in self._workers:
            worker.close(kill)
        self._workers = []

    def imap_unordered(self, function: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple[int, Any]]:
        """Runs ``function(item)`` for every item in the workers; yields ``(index of the item, result)`` as each ends.

        Raises:
            Exception: The first exception a call raised, re-raised here (queued items are not started).
            WorkerCrashed: A worker ended without answering.
        """
        if not self._workers:
            raise RuntimeError("the pool is closed")
        queue = deque(enumerate(items))
        selector = selectors.DefaultSelector()
        try:
            idle = list(self._workers)
            while queue or len(idle) < len(self._workers):
                while queue and idle:
                    worker = idle.pop()
                    worker.index, item = queue.popleft()
                    _send(worker.task_write, pickle.dumps((function, item), protocol=pickle.HIGHEST_PROTOCOL))
                    selector.register(worker.result_read, selectors.EVENT_READ, worker)
                for key, _ in selector.select():
                    worker = key.data
                    selector.unregister(worker.result_read)
                    message = _receive(worker.result_read)
                    if message is None:
                        code = worker.process.wait()
                        raise WorkerCrashed(
                            f"a worker process (pid {worker.process.pid}) ended with exit code {code} while running"
                            f" {getattr(function, '__qualname__', function)!s} on item {worker.index}",
                            worker.index,
                        )
                    status, value = pickle.loads(message)
                    if status == "error":
                        raise value
                    idle.append(worker)
                    yield worker.index, value
        except BaseException:
            self.close(kill=True)  # the others' work is abandoned, not waited for
            raise
        finally:
            selector.close()


def _serve(task_fd: int, result_fd: int) -> None:
    """A worker's loop: run each task received, send back its result or its exception."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the workers
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
    _serve(int(sys.argv[1]), int(sys.argv[2]))
