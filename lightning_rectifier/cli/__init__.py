"""The ``lightning-rectifier`` command.

``fit``, ``validate``, ``test`` and ``predict`` are Lightning's (a :class:`LightningCLI` over
:class:`~lightning_rectifier.SenoneClassifier` and :class:`~lightning_rectifier.AlignedFramesDataModule`);
``prepare``, ``align``, ``decode``, ``compare``, ``grid`` and ``cache`` are the project's own tools. This module
imports neither torch nor Lightning, so ``--help`` and the tools' help answer at once; each subcommand imports
what it needs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from lightning_rectifier.cli.errors import UserError, precheck

LIGHTNING_COMMANDS = {
    "fit": "train a senone classifier (no --config: the demo recipe on the embedded FSDD corpus)",
    "validate": "measure frame error, cross-entropy and sparsity on the validation set",
    "test": "the same on the test set",
    "predict": "compute log-posteriors / scaled log-likelihoods for a data directory",
}
OPTIONAL_PACKAGES = {"tensorboard": "tensorboard", "tensorboardX": "tensorboard", "pocketsphinx": "align"}
TOOL_COMMANDS = {
    "prepare": "audio (wav.scp or a folder) -> a Kaldi data directory of MFCC or fbank features",
    "align": "forced-align a data directory with pocketsphinx -> per-frame senone labels",
    "decode": "decode a data directory to words with a trained model; WER when a transcript exists",
    "compare": "finished runs -> the paper's Table 1 (Markdown, CSV) and convergence / sparsity plots",
    "grid": "run every recipe of a grid (e.g. recipes/fsdd/*.yaml), one run per configuration",
    "cache": "prepare a configuration's data sets once into frame caches that every later run maps",
}


def _help() -> str:
    from lightning_rectifier import __version__

    lines = [
        f"lightning-rectifier {__version__}: rectifier DNN acoustic models on Kaldi data (Maas, Hannun & Ng 2013)",
        "",
        "usage: lightning-rectifier COMMAND [options]     (lightning-rectifier COMMAND --help for its options)",
        "",
        "training and evaluation (LightningCLI: --config recipe.yaml, --model.*, --data.*, --trainer.*):",
        *(f"  {name:<10} {text}" for name, text in LIGHTNING_COMMANDS.items()),
        "",
        "tools:",
        *(f"  {name:<10} {text}" for name, text in TOOL_COMMANDS.items()),
        "",
        "examples:",
        "  lightning-rectifier fit                                  # demo: trains on the embedded FSDD corpus",
        "  lightning-rectifier fit --config recipes/fsdd/relu_3x512.yaml",
        "  lightning-rectifier fit --config recipes/paper/relu_4x2048.yaml --data.train_dir data/train \\",
        "      --data.alignments 'exp/tri4_ali/ali.*.gz' --data.transition_model exp/tri4_ali/final.mdl",
        "  lightning-rectifier fit --ckpt_path last                 # resume an interrupted run",
        "  lightning-rectifier compare runs/",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``lightning-rectifier`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_help())
        return
    if args[0] in ("-V", "--version"):
        from lightning_rectifier import __version__

        print(__version__)
        return
    command = args[0]
    if command in TOOL_COMMANDS:
        from lightning_rectifier.cli import tools

        sys.exit(_reporting_user_errors(command, lambda: tools.run(command, args[1:])))
    if command in LIGHTNING_COMMANDS:
        os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")

        def lightning() -> int:
            if "--help" not in args and "-h" not in args:
                precheck(args)  # missing paths and unknown splits, before torch and Lightning load (seconds)
            from lightning_rectifier.cli.lightning import run_lightning

            run_lightning(args)
            return 0

        status = _reporting_user_errors(command, lightning)
        if status:
            sys.exit(status)
        return
    print(f"lightning-rectifier: unknown command {command!r}\n\n{_help()}", file=sys.stderr)
    sys.exit(2)


def _reporting_user_errors(command: str, run: Callable[[], int | None]) -> int:
    """Runs a command; a user's mistake (bad path, bad data, missing checkpoint) ends in one line and status 2.

    ``LIGHTNING_RECTIFIER_DEBUG=1`` shows the traceback instead.
    """
    from lightning_rectifier.checkpoint import CheckpointError
    from lightning_rectifier.data.errors import KaldiDataError

    user_errors = (FileNotFoundError, KaldiDataError, CheckpointError, UserError, ModuleNotFoundError)
    try:
        return run() or 0
    except user_errors as error:
        if os.environ.get("LIGHTNING_RECTIFIER_DEBUG"):
            raise
        if isinstance(error, ModuleNotFoundError):
            # by the missing module's name, or by the message (Lightning's TensorBoardLogger raises one without a name)
            names = [(error.name or "").partition(".")[0], *(p for p in OPTIONAL_PACKAGES if f"`{p}`" in str(error))]
            package = next((name for name in names if name in OPTIONAL_PACKAGES), None)
            if package is None:
                raise
            extra = OPTIONAL_PACKAGES[package]
            message = f"this needs {package}, an optional dependency: pip install 'lightning-rectifier[{extra}]'"
        else:
            message = str(error).strip() or type(error).__name__
        print(f"lightning-rectifier {command}: error: {message}", file=sys.stderr)
        print("(LIGHTNING_RECTIFIER_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2


__all__ = ["UserError", "main"]
