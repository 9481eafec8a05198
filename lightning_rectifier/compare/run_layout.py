"""Where a run's files live: the one layout that ``fit``, ``test``, ``decode``, ``predict`` and ``compare`` share.

::

    runs/<name>/                       one run (named after its configuration: relu-3x256)
        version_<N>/                   one ``fit`` session: metrics.csv, config.yaml, summary.json, dispersion/
                                       (a resumed fit writes version_<N+1>; compare joins them into one history)
        checkpoints/                   best-epoch<E>-step<S>.ckpt, last.ckpt, steps/last.ckpt
        eval/<data>/                   one evaluated data set (fsdd:test -> fsdd_test, data/eval2000 -> eval2000):
            metrics.csv, metrics.json  ``test`` / ``validate`` (metrics.json also names the checkpoint)
            decode/                    hyp.txt, wer.json, ali.ark (``test`` with DecodeTestSet, or ``decode``)
            predict/                   loglikes.scp (Kaldi ark,scp) and its config (``predict``)

Evaluating a data set again rewrites that data set's files only (files an earlier evaluation wrote and this one
does not, such as ``decode``'s ``ali.ark``, stay: ``wer.json`` names the checkpoint behind it). This module
imports nothing heavy: the command line uses it before torch is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

EVAL = "eval"
CHECKPOINTS = "checkpoints"


def data_folder_name(data: str) -> str:
    """A folder name for an evaluated data set.

    Example:
        >>> data_folder_name("fsdd:test"), data_folder_name("data/eval2000/"), data_folder_name("valid")
        ('fsdd_test', 'eval2000', 'valid')
    """
    if ":" in data:
        return data.replace(":", "_").replace("/", "_")
    return Path(data.rstrip("/")).name or "data"


def eval_dir(run_dir: str | os.PathLike[str], data: str) -> Path:
    """``<run>/eval/<data>``: where evaluating ``data`` with the run's model writes.

    Example:
        >>> eval_dir("runs/relu-3x256", "fsdd:test").as_posix()
        'runs/relu-3x256/eval/fsdd_test'
    """
    return Path(run_dir) / EVAL / data_folder_name(data)


def run_of_checkpoint(checkpoint: str | os.PathLike[str]) -> Path | None:
    """The run folder a checkpoint was saved in (``<run>/checkpoints/[steps/]*.ckpt``), or ``None``.

    Example:
        >>> run_of_checkpoint("runs/relu-3x256/checkpoints/last.ckpt").as_posix()
        'runs/relu-3x256'
        >>> run_of_checkpoint("runs/relu-3x256/checkpoints/steps/last.ckpt").as_posix()
        'runs/relu-3x256'
        >>> run_of_checkpoint("model.ckpt") is None
        True
    """
    path = Path(checkpoint)
    for parent in path.parents[:2]:
        if parent.name == CHECKPOINTS:
            return parent.parent
    return None


def best_checkpoint(run_dir: str | os.PathLike[str]) -> Path | None:
    """A run's best checkpoint: the newest ``checkpoints/best-*.ckpt`` (lowest ``val/loss``, as ``fit`` saves it)."""
    candidates = sorted((Path(run_dir) / CHECKPOINTS).glob("best-*.ckpt"), key=lambda path: path.stat().st_mtime)
    return candidates[-1] if candidates else None


def has_checkpoints(run_dir: str | os.PathLike[str]) -> bool:
    """Whether a run folder already holds a trained run's checkpoints."""
    directory = Path(run_dir) / CHECKPOINTS
    return directory.is_dir() and any(directory.rglob("*.ckpt"))
