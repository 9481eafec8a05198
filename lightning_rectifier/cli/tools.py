"""The project's own subcommands: ``prepare``, ``align``, ``decode``, ``compare``, ``grid`` and ``cache``.

Each calls one library function; its options are generated from that function's signature and docstring
(:mod:`lightning_rectifier.cli.arguments`), so ``--help`` says what the Python API says. ``grid`` and ``compare``
import nothing heavy before their arguments are valid.
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

from lightning_rectifier.cli.arguments import add_function_arguments
from lightning_rectifier.cli.errors import UserError

log = logging.getLogger("lightning_rectifier")


def _parser(command: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog=f"lightning-rectifier {command}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")


def _one_handler_for_lightning() -> None:
    """``import lightning`` gives its logger a handler of its own; with ours on the root, each line came twice."""
    lightning_logger = logging.getLogger("lightning")
    if logging.getLogger().handlers and lightning_logger.handlers:
        lightning_logger.handlers.clear()


# ------------------------------------------------------------------------------------------------- grid


def grid(argv: Sequence[str]) -> int:
    """``lightning-rectifier grid RECIPE... [--base CFG] [--seeds 0,1,2] [-- FIT ARGS]``: one ``fit`` per run."""
    extra: list[str] = []
    if "--" in argv:
        split = list(argv).index("--")
        argv, extra = list(argv[:split]), list(argv[split + 1 :])
    parser = _parser(
        "grid",
        "Runs `lightning-rectifier fit --config RECIPE` for every recipe, one after the other. Each run is named\n"
        "after its configuration, as `fit` names it (relu_3x512.yaml -> runs/relu-3x512). With --seeds, each recipe\n"
        "runs once per seed, in runs/<name>/seed<k>: the seed of the initialisation (--seed_everything) and of the\n"
        "data order (--data.seed); the development split keeps its own seed (--data.split_seed, fixed), so every\n"
        "seed is scored on the same frames. Arguments after `--` go to every fit.\n\n"
        "example:\n  lightning-rectifier grid recipes/fsdd/*x512.yaml --base recipes/fsdd/base.yaml --seeds 0,1,2\n"
        "  lightning-rectifier compare runs/",
    )
    parser.add_argument("recipes", nargs="+", help="recipe YAML files or globs (fragments like base.yaml excluded)")
    parser.add_argument("--base", action="append", default=[], help="config applied before each recipe (repeatable)")
    parser.add_argument("--seeds", type=_seed_list, help="comma-separated seeds: one run per recipe and seed")
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
    jobs = [(recipe, seed) for recipe in recipes for seed in (args.seeds or [None])]
    for number, (recipe, seed) in enumerate(jobs, 1):
        command = [sys.executable, "-m", "lightning_rectifier", "fit"]
        for base in args.base:
            command += ["--config", base]
        command += ["--config", str(recipe)]
        if seed is not None:
            command += ["--seed_everything", str(seed), "--data.seed", str(seed), "--run_suffix", f"seed{seed}"]
        command += extra
        label = recipe.stem if seed is None else f"{recipe.stem} seed {seed}"
        print(f"[{number}/{len(jobs)}] {shlex.join(command[2:])}", flush=True)
        if args.dry_run:
            continue
        start = time.perf_counter()
        result = subprocess.run(command, check=False)
        status = "done" if result.returncode == 0 else f"FAILED (exit {result.returncode})"
        print(f"[{number}/{len(jobs)}] {label}: {status} in {time.perf_counter() - start:.0f} s", flush=True)
        if result.returncode != 0:
            failures.append(label)
            if not args.keep_going:
                break
    if failures:
        print(f"grid: {len(failures)} run(s) failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


def _seed_list(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (argparse type of ``grid --seeds``)."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,1,2, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"expected distinct comma-separated integers such as 0,1,2, got {text!r}")
    return seeds


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
    from lightning_rectifier.frontend.prepare import prepare_data_dir

    source = parser.add_mutually_exclusive_group(required=True)  # the function's wav_scp_or_folder, as two flags
    source.add_argument("--wav_scp", help="Kaldi wav.scp (utterance or recording -> audio file), or a data directory")
    source.add_argument("--audio_dir", help="a folder of .wav/.flac files (utterance id = file name stem)")
    options = add_function_arguments(parser, prepare_data_dir, skip={"wav_scp_or_folder"}, negate={"progress"})
    args = parser.parse_args(argv)
    _logging()
    _one_handler_for_lightning()
    prepare_data_dir(args.wav_scp or args.audio_dir, **options.kwargs(args))  # logs its summary (one line)
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
    from lightning_rectifier.frontend.align import align_data_dir
    from lightning_rectifier.frontend.features import FeatureConfig

    options = add_function_arguments(
        parser,
        align_data_dir,
        rename={"source": "data_dir"},
        skip={"config", "aligner"},  # the features' own configuration (conf/features.yaml) and the bundled model
        optional={"out_dir"},
        negate={"progress"},
        notes={"out_dir": "Default: the data directory."},
    )
    args = parser.parse_args(argv)
    _logging()
    _one_handler_for_lightning()
    kwargs = options.kwargs(args)
    config_file = Path(args.data_dir) / "conf" / "features.yaml"
    kwargs["config"] = FeatureConfig.load(config_file) if config_file.exists() else None
    kwargs["out_dir"] = kwargs["out_dir"] or args.data_dir
    align_data_dir(**kwargs)  # logs its summary (one line)
    return 0


# ------------------------------------------------------------------------------------------------- decode / compare


def decode(argv: Sequence[str]) -> int:
    """``lightning-rectifier decode``: words and WER from a trained model (or, with ``--gmm``, a Kaldi GMM system)."""
    if "--gmm" in argv or any(arg.startswith("--gmm=") for arg in argv):
        return _decode_gmm(argv)
    parser = _parser(
        "decode",
        "Decodes a data directory to words with a trained model and writes OUT/hyp.txt (Kaldi text), OUT/ali.ark\n"
        "(best-path senone per frame) and, when DIR/text exists, OUT/wer.json. Without --graph, the demo corpus's\n"
        "digit grammar. Without --out_dir, OUT is the run's eval/<data>/decode (runs/<name>/eval/fsdd_test/decode\n"
        "for a checkpoint in runs/<name>/checkpoints), where `compare` finds it.\n\n"
        "examples:\n"
        "  lightning-rectifier decode --ckpt_path runs/relu-3x256 --data_dir fsdd:test --grammar word\n"
        "  lightning-rectifier decode --ckpt_path CKPT --data_dir data/eval2000 --graph exp/tri4/graph/HCLG.fst \\\n"
        "      --words exp/tri4/graph/words.txt --transition_model exp/tri4/final.mdl --out_dir exp/decode_eval2000\n\n"
        "The GMM baseline (the paper's first row), same graph, same scoring: see decode --gmm FINAL.MDL --help.",
    )
    from lightning_rectifier.decode.directory import decode_directory

    options = add_function_arguments(
        parser,
        decode_directory,
        rename={"checkpoint": "ckpt_path"},
        optional={"out_dir"},
        notes={"checkpoint": "A run folder means its best checkpoint.", "out_dir": "Default: the run's eval folder."},
    )
    args = parser.parse_args(argv)
    kwargs = options.kwargs(args)
    kwargs["checkpoint"], kwargs["out_dir"] = _decode_paths(args)
    _logging()
    _one_handler_for_lightning()
    report = decode_directory(**kwargs)
    _print_wer(report.wer, args.data_dir)
    print(f"decode: {', '.join(report.files)} in {kwargs['out_dir']}")
    return 0


def _decode_gmm(argv: Sequence[str]) -> int:
    """``decode --gmm exp/tri1/final.mdl``: the GMM system's own likelihoods through the graph, scored alike."""
    parser = _parser(
        "decode --gmm",
        "Decodes a data directory with a Kaldi GMM system (mono or deltas: train_mono.sh, train_deltas.sh) through\n"
        "its graph, to lattices scored like the hybrids' (LM weights x insertion penalties, chosen on --tune_dir).\n"
        "wer.json records system: gmm; `compare runs/ --baseline OUT` puts it above the hybrids in Table 1.\n\n"
        "example:\n"
        "  lightning-rectifier decode --gmm exp/tri1/final.mdl --graph exp/tri1/graph --data_dir data/test \\\n"
        "      --tune_dir data/dev --out_dir exp/tri1/decode_test_lr",
    )
    from lightning_rectifier.decode.gmm_baseline import decode_gmm_directory

    options = add_function_arguments(parser, decode_gmm_directory, rename={"model": "gmm"})
    args = parser.parse_args(argv)
    from lightning_rectifier.cli.errors import UserError, check_data_dir

    if not Path(args.gmm).is_file():
        raise UserError(f"--gmm {args.gmm}: no such file (expected a GMM system's final.mdl)")
    check_data_dir("--data_dir", args.data_dir)
    if args.tune_dir:
        check_data_dir("--tune_dir", args.tune_dir)
    _logging()
    _one_handler_for_lightning()
    report = decode_gmm_directory(**options.kwargs(args))
    _print_wer(report.wer, args.data_dir)
    print(f"decode: {', '.join(report.files)} in {args.out_dir}")
    return 0


def _print_wer(wer: dict | None, data_dir: str) -> None:
    if wer is not None:
        errors = wer["substitutions"] + wer["deletions"] + wer["insertions"]
        print(
            f"WER {100 * wer['wer']:.2f} % [ {errors} / {wer['num_words']}, {wer['insertions']} ins,"
            f" {wer['deletions']} del, {wer['substitutions']} sub ]  SER {100 * wer['sentence_error_rate']:.2f} %"
            f"  ({data_dir})"
        )


def _decode_paths(args: argparse.Namespace) -> tuple[str, str]:
    """The checkpoint (a run folder: its best) and the output folder (default: the run's eval folder), checked."""
    from lightning_rectifier.cli.errors import UserError, check_data_dir
    from lightning_rectifier.compare.run_layout import CHECKPOINTS, best_checkpoint, eval_dir, run_of_checkpoint

    checkpoint = args.ckpt_path
    if Path(checkpoint).is_dir():  # a run folder: its best checkpoint
        best = best_checkpoint(checkpoint)
        if best is None:
            raise UserError(f"--ckpt_path {checkpoint}: a folder without {CHECKPOINTS}/best-*.ckpt (run fit first)")
        checkpoint = str(best)
        print(f"decode: the run's best checkpoint (lowest val/loss): {checkpoint}")
    if not Path(checkpoint).is_file():
        raise UserError(f"--ckpt_path {checkpoint}: no such file (expected a checkpoint written by fit)")
    check_data_dir("--data_dir", args.data_dir)
    if args.tune_dir:
        check_data_dir("--tune_dir", args.tune_dir)
    out_dir = args.out_dir
    if out_dir is None:
        run_dir = run_of_checkpoint(checkpoint)
        if run_dir is None:
            raise UserError(f"--ckpt_path {checkpoint} is not in a run's checkpoints folder: give --out_dir")
        out_dir = str(eval_dir(run_dir, args.data_dir) / "decode")
    return checkpoint, out_dir


def compare(argv: Sequence[str]) -> int:
    """``lightning-rectifier compare``: finished runs -> the paper's Table 1 and plots."""
    from lightning_rectifier.compare import main

    return main(argv)


# ------------------------------------------------------------------------------------------------- cache


def cache(argv: Sequence[str]) -> int:
    """``lightning-rectifier cache --config RECIPE --data.cache_dir DIR``: the frame caches a run will map."""
    parser = _parser(
        "cache",
        "Prepares the training, validation and test sets of a configuration (CMVN, deltas, labels, priors, input\n"
        "moments) into frame caches under --data.cache_dir, one process per core, so that `fit` with the same\n"
        "data options (and cache_dir) maps them and starts in seconds, every DDP process of a node sharing one copy.\n"
        "Takes the `data:` section of fit's --config files and any --data.* option; other sections are ignored.\n"
        "With --verify, checks every block checksum of existing cache folders instead.\n\n"
        "example:\n  lightning-rectifier cache --config recipes/fsdd/base.yaml --data.cache_dir cache/\n"
        "  lightning-rectifier fit --config recipes/fsdd/base.yaml --config recipes/fsdd/relu_3x512.yaml"
        " --data.cache_dir cache/",
    )
    parser.add_argument("--config", action="append", default=[], help="fit configuration (repeatable)")
    parser.add_argument("--verify", nargs="+", metavar="DIR", help="cache folders to check, block by block")
    args, data_options = parser.parse_known_args(argv)
    _logging()
    if args.verify:
        from lightning_rectifier.data.frame_cache import FrameCache

        for folder in args.verify:
            opened = FrameCache.open(folder, verify="full")
            print(f"{folder}: ok ({opened.num_frames} frames, {opened.num_utterances} utterances)")
        return 0
    unknown = [a for a in data_options if a.startswith("-") and not a.startswith("--data.")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (only --config and --data.* are read)")
    datamodule = _datamodule_from(args.config, data_options)
    _one_handler_for_lightning()
    if datamodule.hparams["cache_dir"] is None:
        raise UserError("no cache folder: pass --data.cache_dir DIR (or set data.cache_dir in the configuration)")
    started = time.perf_counter()
    datamodule.prepare_data()
    datamodule.setup("fit")
    if datamodule.hparams["test_dir"] is not None:
        datamodule.setup("test")
    for split, built in datamodule.caches.items():
        seconds = built.meta.get("build_seconds", 0.0)
        print(f"{split}: {built.path} ({built.num_frames} frames; built in {seconds:.1f} s)")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def _datamodule_from(configs: Sequence[str], options: Sequence[str]):
    """The datamodule of fit's configuration files (their ``data:`` sections) and ``--data.*`` options."""
    import yaml
    from jsonargparse import ArgumentParser

    from lightning_rectifier.data import AlignedFramesDataModule

    merged: dict = {}
    for config in configs:
        if not Path(config).is_file():
            raise UserError(f"configuration file not found: {config}")
        section = (yaml.safe_load(Path(config).read_text()) or {}).get("data") or {}
        merged.update(section.get("init_args", section) if isinstance(section, dict) else {})
    parser = ArgumentParser(prog="lightning-rectifier cache", exit_on_error=False)
    parser.add_class_arguments(AlignedFramesDataModule, "data")
    parser.set_defaults({f"data.{key}": value for key, value in merged.items()})
    try:
        parsed = parser.parse_args(list(options))
    except Exception as error:  # jsonargparse's ArgumentError: a bad option or value
        raise UserError(str(error).strip().splitlines()[0]) from None
    return parser.instantiate(parsed).data


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "cache": cache,
    "grid": grid,
    "prepare": prepare,
    "align": align,
    "decode": decode,
    "compare": compare,
}


def run(command: str, argv: Sequence[str]) -> int:
    """Runs a tool subcommand; returns its exit status."""
    return COMMANDS[command](argv)
