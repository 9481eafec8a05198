"""Worker processes: results and errors come back, crashes are named, and the caller's script is never re-run."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from lightning_rectifier.data.workers import WorkerCrashed, WorkerPool

_LOADED = "[m for m in ('torch', '__mp_main__') if m in __import__('sys').modules]"


def test_results_come_back_with_their_item_index_from_fresh_interpreters() -> None:
    with WorkerPool(2) as pool:
        assert dict(pool.imap_unordered(abs, range(-20, 0))) == {i: 20 - i for i in range(20)}
        assert list(pool.imap_unordered(abs, [])) == []  # the pool is reusable
        assert list(pool.imap_unordered(eval, [_LOADED])) == [(0, [])]  # neither torch nor the caller's script


def test_an_exception_in_a_worker_is_raised_here_as_itself() -> None:
    with WorkerPool(2) as pool, pytest.raises(ValueError, match="math domain error"):
        list(pool.imap_unordered(math.sqrt, [1.0, -1.0, 4.0]))


def test_a_worker_that_dies_is_named_with_its_item() -> None:
    with WorkerPool(1) as pool, pytest.raises(WorkerCrashed, match="exit code 7 while running _exit on item 0"):
        list(pool.imap_unordered(os._exit, [7]))


def test_imap_keeps_input_order_and_takes_items_only_as_the_window_allows() -> None:
    taken: list[int] = []

    def items():
        for value in range(-30, 0):
            taken.append(value)
            yield value

    with WorkerPool(2) as pool:
        seen = []
        for index, value in pool.imap(abs, items(), window=3):
            assert len(taken) <= index + 3  # never more than the window ahead of what was yielded
            seen.append((index, value))
        assert seen == [(i, 30 - i) for i in range(30)] and len(taken) == 30
        with pytest.raises(ValueError, match="window of at least one"):
            list(pool.imap(abs, [1], window=-1))
        slow_first = [0.5, 0.0]  # the second ends first: held back until the first is yielded
        assert [i for i, _ in pool.imap_unordered(time.sleep, slow_first)] == [1, 0]
        assert [i for i, _ in pool.imap(time.sleep, slow_first)] == [0, 1]


def test_the_initializer_runs_once_in_every_worker_before_the_tasks(tmp_path: Path) -> None:
    with WorkerPool(2, os.chdir, (str(tmp_path),)) as pool:
        assert {cwd for _, cwd in pool.imap_unordered(os.path.abspath, ["."] * 6)} == {str(tmp_path)}
    with pytest.raises(ValueError, match="math domain error"):
        WorkerPool(2, math.sqrt, (-1.0,))


def test_preloaded_modules_are_imported_as_each_worker_starts() -> None:
    probe = "'colorsys' in __import__('sys').modules"  # a module nothing else here imports
    with WorkerPool(1) as pool:
        assert list(pool.imap_unordered(eval, [probe])) == [(0, False)]
    with WorkerPool(2, preload=("colorsys", "no_such_module_anywhere")) as pool:  # a missing one is not fatal
        assert pool.size == 2
        assert [loaded for _, loaded in pool.imap_unordered(eval, [probe] * 4)] == [True] * 4
    assert pool.size == 0


def test_an_error_while_reading_the_items_stops_the_pool() -> None:
    def items():
        yield 1
        raise KeyError("bad item")

    pool = WorkerPool(2)
    with pytest.raises(KeyError, match="bad item"):
        list(pool.imap(abs, items()))
    with pytest.raises(RuntimeError, match="closed"):
        list(pool.imap(abs, [1]))


def test_a_script_without_a_main_guard_builds_a_cache_with_workers(ami_data_dir: Path, tmp_path: Path) -> None:
    """With spawn, each worker re-ran such a script (which then crashed the pool: BrokenProcessPool)."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(f"""
        import lightning_rectifier.data.frame_cache as frame_cache
        from lightning_rectifier.data.corpus import plan_frame_store
        from lightning_rectifier.data.datadir import KaldiDataDir
        from lightning_rectifier.data.pipeline import FeaturePipeline

        print("script body ran")
        frame_cache._MIN_FRAMES_PER_WORKER = 1
        plan = plan_frame_store(KaldiDataDir.load({str(ami_data_dir)!r}), None, pipeline=FeaturePipeline())
        cache = frame_cache.write_frame_cache(plan, {str(tmp_path / "cache")!r}, workers=2)
        print("workers", cache.meta["workers"], "frames", cache.meta["frames"])
        """)
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("script body ran") == 1
    assert "workers 2 frames" in done.stdout
