"""Small run-time helpers shared by the audio tools: Kaldi's sort order, torch threads, progress bars."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager


def c_sorted(keys: Iterable[str]) -> list[str]:
    """Kaldi sorts with LC_ALL=C: by bytes."""
    return sorted(keys, key=lambda k: k.encode())


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Temporarily sets torch's intra-op threads (restored afterwards); ``None`` leaves them alone."""
    import torch  # here: this module is imported by torch-free worker processes

    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def progress_bar(enabled: bool, total: int, description: str) -> Iterator[Callable[..., None]]:
    """Yields an ``advance(amount=1)`` callable, driving a rich progress bar when enabled."""
    if not enabled:
        yield lambda amount=1: None
        return
    from rich.progress import Progress  # lazily: only for interactive runs

    with Progress(transient=True) as prog:
        task = prog.add_task(description, total=total)
        yield lambda amount=1: prog.advance(task, amount)
