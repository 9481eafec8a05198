"""The project's own subcommands: ``prepare``, ``align``, ``decode``, ``compare`` and ``grid``.

Each parses its arguments with argparse (fast: nothing heavy is imported before the arguments are valid) and calls
the library function that does the work.
"""

from __future__ import annotations

import argparse
import glob
import logging
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger("lightning_rectifier")


def _parser(command: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=f"lightning-rectifier {command}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")


# ------------------------------------------------------------------------------------------------- grid


def grid(argv: Sequence[str]) -> int:
    """``lightning-rectifier grid RECIPE... [--base CFG] [--dry_run] [-- FIT ARGS]``: one ``fit`` per recipe."""
    extra: list[str] = []
    if "--" in argv:
        split = list(argv).index("--")
        argv, extra = list(argv[:split]), list(argv[split + 1 :])
    parser = _parser(
        "grid",
        "Runs `lightning-rectifier fit --config RECIPE` for every recipe, one after the other, each run named after\n"
        "its recipe file (relu_3x512.yaml -> runs/relu_3x512). Arguments after `--` go to every fit.\n\n"
        "example:\n  lightning-rectifier grid recipes/fsdd/*.yaml -- --trainer.max_epochs 3\n"
        "  lightning-rectifier compare runs/",
    )
    parser.add_argument("recipes", nargs="+", help="recipe YAML files or globs (fragments like base.yaml excluded)")
    parser.add_argument("--base", action="append", default=[], help="config applied before each recipe (repeatable)")
    parser.add_argument("--dry_run", action="store_true", help="print the commands without running them")
    parser.add_argument("--keep_going", action="store_true", help="run the remaining recipes when one fails")
    args = parser.parse_args(argv)
    recipes: list[Path] = []
    for pattern in args.recipes:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            parser.error(f"no recipe matches {pattern!r}")
        recipes += [Path(m) for m in matches if Path(m).resolve() not in {Path(b).resolve() for b in args.base}]
    missing = [str(r) for r in recipes if not r.is_file()]
    if missing:
        parser.error(f"recipe files not found: {', '.join(missing)}")
    failures: list[str] = []
    for number, recipe in enumerate(recipes, 1):
        command = [sys.executable, "-m", "lightning_rectifier", "fit"]
        for base in args.base:
            command += ["--config", base]
        command += ["--config", str(recipe), "--run_name", recipe.stem, *extra]
        print(f"[{number}/{len(recipes)}] {shlex.join(command[2:])}", flush=True)
        if args.dry_run:
            continue
        start = time.perf_counter()
        result = subprocess.run(command, check=False)
        status = "done" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
        print(f"[{number}/{len(recipes)}] {recipe.stem}: {status} in {time.perf_counter() - start:.0f} s", flush=True)
        if result.returncode != 0:
            failures.append(recipe.stem)
            if not args.keep_going:
                break
    if failures:
        print(f"grid: {len(failures)} run(s) failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------------------------------------- prepare / align


def prepare(argv: Sequence[str]) -> int:
    """``lightning-rectifier prepare``: audio -> a Kaldi data directory of features."""
    parser = _parser(
        "prepare",
        "Computes Kaldi-compatible MFCC (or fbank) features and writes a Kaldi data directory: feats.ark/scp,\n"
        "utt2spk, spk2utt, text, cmvn.ark/scp (per speaker), utt2num_frames, conf/.\n\n"
        "example:\n  lightning-rectifier prepare --wav_scp data/train/wav.scp --text data/train/text \\\n"
        "      --utt2spk data/train/utt2spk --out_dir data/train_mfcc --config conf/mfcc.yaml",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--wav_scp", help="Kaldi wav.scp (utterance or recording -> audio file)")
    source.add_argument("--audio_dir", help="a folder of .wav/.flac files (utterance id = file name stem)")
    parser.add_argument("--out_dir", required=True, help="the data directory to write")
    parser.add_argument("--text", help="transcripts (Kaldi text)")
    parser.add_argument("--utt2spk", help="utterance -> speaker (default: each utterance its own speaker)")
    parser.add_argument("--segments", help="Kaldi segments file (utterances cut from wav.scp recordings)")
    parser.add_argument("--config", help="feature configuration: YAML (kind, sample_rate, options) or Kaldi mfcc.conf")
    parser.add_argument("--compress", action="store_true", help="store Kaldi-compressed features")
    parser.add_argument("--skip_bad", action="store_true", help="skip (and count) unreadable audio instead of failing")
    parser.add_argument("--allow_pipes", action="store_true", help="run wav.scp entries that are shell commands")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    _logging()
    from lightning_rectifier.features import prepare_data_dir

    summary = prepare_data_dir(
        args.wav_scp or args.audio_dir,
        args.out_dir,
        text=args.text,
        utt2spk=args.utt2spk,
        segments=args.segments,
        config=args.config,
        compress=args.compress,
        skip_bad=args.skip_bad,
        allow_pipes=args.allow_pipes,
        progress=not args.no_progress,
    )
    del summary  # logged by the library (one line, as Kaldi's tools)
    return 0


def align(argv: Sequence[str]) -> int:
    """``lightning-rectifier align``: forced alignment with pocketsphinx -> per-frame senone labels."""
    parser = _parser(
        "align",
        "Forced-aligns every utterance of a data directory (its wav.scp and text) with pocketsphinx's US-English\n"
        "model and writes ali.ark/ali.scp (one senone id per feature frame), words.ctm, phones.ctm and align.log.\n"
        "Needs the [align] extra: pip install 'lightning-rectifier[align]'.\n\n"
        "example:\n  lightning-rectifier align --data_dir data/train_mfcc",
    )
    parser.add_argument("--data_dir", required=True, help="data directory made by `prepare` (wav.scp, text, ...)")
    parser.add_argument("--out_dir", help="where to write the alignments (default: the data directory)")
    parser.add_argument("--text", help="transcripts (default: the data directory's text)")
    parser.add_argument("--strict", action="store_true", help="fail on the first utterance that cannot be aligned")
    parser.add_argument("--allow_pipes", action="store_true", help="run wav.scp entries that are shell commands")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    _logging()
    from lightning_rectifier.align import align_data_dir
    from lightning_rectifier.features import FeatureConfig

    data_dir = Path(args.data_dir)
    config_file = data_dir / "conf" / "features.yaml"
    config = FeatureConfig.load(config_file) if config_file.exists() else None
    summary = align_data_dir(
        data_dir,
        args.out_dir or data_dir,
        text=args.text,
        config=config,
        strict=args.strict,
        allow_pipes=args.allow_pipes,
        progress=not args.no_progress,
    )
    del summary  # logged by the library (one line, as Kaldi's tools)
    return 0


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {"grid": grid, "prepare": prepare, "align": align}


def run(command: str, argv: Sequence[str]) -> int:
    """Runs a tool subcommand; returns its exit status."""
    return COMMANDS[command](argv)
