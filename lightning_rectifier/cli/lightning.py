"""``RectifierCLI``: LightningCLI over ``SenoneClassifier`` and ``AlignedFramesDataModule``.

What it adds to LightningCLI:

- sizes linked, never typed twice: ``data.feat_dim -> model.input_dim`` and ``data.num_senones -> model.num_senones``;
- without ``--config``, the demo recipe (``lightning_rectifier/configs/demo.yaml``: a small ReLU network on the
  embedded FSDD corpus) so that ``lightning-rectifier fit`` runs out of the box;
- runs named after their configuration (``relu-3x512``) under ``runs/``, a CSV logger and a W&B logger (offline
  when no API key is configured, so nothing prompts or blocks; ``--wandb false`` turns it off);
- checkpoints in ``runs/<name>/checkpoints``: the best by ``val/loss`` and ``last.ckpt`` at each validation, and
  ``steps/last.ckpt`` every ``--checkpoint_every_n_steps`` steps, so ``fit --ckpt_path last`` (the newest of the
  two) resumes an interrupted run, mid-epoch included, exactly where it stopped;
- a ``DispersionMonitor`` and a one-screen ``RunSummary`` at the end;
- the run layout of :mod:`lightning_rectifier.compare.run_layout`: ``validate`` / ``test`` / ``predict`` evaluate
  the run's best checkpoint and write into ``runs/<name>/eval/<data>/`` (CSV only), never into the training history;
  a new ``fit`` refuses a run folder that already holds checkpoints (resume it, or choose another ``--run_name``);
- mistakes in options end in one line with the closest option (``--model.hiden_dim``: did you mean
  ``--model.hidden_dim``?).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from argparse import ArgumentError
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_rectifier.callbacks import DispersionMonitor
from lightning_rectifier.callbacks.summary import RunSummary
from lightning_rectifier.cli.errors import UserError, explain_parse_error
from lightning_rectifier.compare.run_layout import (
    CHECKPOINTS,
    best_checkpoint,
    eval_dir,
    has_checkpoints,
    run_of_checkpoint,
)
from lightning_rectifier.data.datamodule import AlignedFramesDataModule
from lightning_rectifier.module import SenoneClassifier

log = logging.getLogger("lightning_rectifier")
DEMO_CONFIG = resources.files("lightning_rectifier") / "configs" / "demo.yaml"
_NOISE = [
    r"LightningCLI's args parameter is intended to run from within Python",  # run_lightning passes the argv it got
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning 2.6 with torch >= 2.11
    r"The number of training batches .* is smaller than the logging interval",
    r"Total length of .* across ranks is zero",  # no validation set configured
    # the module's evaluation metrics are torchmetrics objects, already reduced across processes by compute()
    r"It is recommended to use `self.log\('(val|test)/.*sync_dist=True",
    r"Experiment logs directory .*eval.* exists and is not empty",  # evaluating a data set again replaces its files
    r"Couldn't infer the batch indices fetched from your dataloader",  # predict: the writer keys by utterance
]
EVALUATIONS = ("validate", "test", "predict")


class _DropTips(logging.Filter):
    """Drops Lightning's advertisement for its cloud logger, printed by every Trainer."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("\N{ELECTRIC LIGHT BULB} Tip:")


_DROP_TIPS = _DropTips()


def wandb_has_key() -> bool:
    """Whether a W&B API key is configured (environment or ``~/.netrc``); without one W&B runs offline."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def _explicit_untrained(args: list[str]) -> bool:
    """Whether the command line says ``--ckpt_path none`` (evaluate the network as initialised)."""
    for i, arg in enumerate(args):
        value = arg.partition("=")[2] if arg.startswith("--ckpt_path=") else None
        if arg == "--ckpt_path" and i + 1 < len(args):
            value = args[i + 1]
        if value is not None and value.strip().lower() in ("none", "null"):
            return True
    return False


def checkpoint_callbacks(directory: Path, config: Any) -> list[ModelCheckpoint]:
    """What ``fit`` saves in ``runs/<name>/checkpoints``; each file says what it is.

    - ``best-epoch{E}-step{S}.ckpt``: lowest ``val/loss`` (the one the run summary's "best" column reports, and the
      one ``validate`` / ``test`` / ``predict`` use by default);
    - ``last.ckpt``: the latest state, written at every validation and when training ends (the final weights);
    - ``steps/last.ckpt``: every ``checkpoint_every_n_steps`` steps, a resume point between validations.

    ``fit --ckpt_path last`` resumes from the newer of the two ``last.ckpt``.
    """
    return [
        ModelCheckpoint(
            dirpath=directory,
            filename="best-epoch{epoch:03d}-step{step:07d}",
            auto_insert_metric_name=False,
            monitor="val/loss",
            mode="min",
            save_top_k=1,
            save_last=False,  # Lightning's save_last copies the *best* file: see FinalCheckpoint
        ),
        FinalCheckpoint(dirpath=directory, filename="last", save_top_k=1, enable_version_counter=False),
        ModelCheckpoint(  # resume point between validations; `--ckpt_path last` takes the newest last.ckpt
            dirpath=directory / "steps",
            every_n_train_steps=config.get("checkpoint_every_n_steps") or None,
            save_top_k=0,
            save_last=True,
        ),
    ]


class FinalCheckpoint(ModelCheckpoint):
    """``last.ckpt``: the latest state at every validation (Lightning's ``monitor=None`` top-1), and at the end."""

    def on_train_end(self, trainer: Trainer, pl_module: Any) -> None:
        """Saves the final weights too: training can stop after the last validation (``max_steps``, newbob)."""
        super().on_train_end(trainer, pl_module)
        if self._last_global_step_saved != trainer.global_step and not getattr(trainer, "fast_dev_run", False):
            self.save_checkpoint(trainer)

    def save_checkpoint(self, trainer: Trainer) -> None:
        """Writes ``last.ckpt`` now (on every process, as Lightning's checkpointing requires)."""
        self._save_checkpoint(trainer, self.format_checkpoint_name({}))

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self.last_model_path = filepath  # what the run summary reports as the last checkpoint


def run_name(model: Any) -> str:
    """A run's default name from its model configuration, e.g. ``relu-3x512``."""
    return f"{model['nonlinearity']}-{model['num_layers']}x{model['hidden_dim']}"


class RectifierCLI(LightningCLI):
    """The command line's Lightning part; see the module docstring."""

    raw_args: ClassVar[list[str]] = []  # the command line as typed (to tell `--ckpt_path none` from no --ckpt_path)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Links data sizes to the model and adds the run options."""
        parser.link_arguments("data.feat_dim", "model.input_dim", apply_on="instantiate")
        parser.link_arguments("data.num_senones", "model.num_senones", apply_on="instantiate")
        parser.add_argument("--run_name", type=str | None, default=None, help="Run name (default: e.g. relu-3x512).")
        parser.add_argument(
            "--run_suffix",
            type=str | None,
            default=None,
            help="A subfolder of the run's folder for repeats (grid --seeds: seed1 -> runs/relu-3x512/seed1).",
        )
        parser.add_argument("--wandb", type=bool, default=True, help="Also log to W&B (offline without an API key).")
        parser.add_argument(
            "--checkpoint_every_n_steps", type=int, default=200, help="Steps between last.ckpt saves (resumable)."
        )
        parser.add_argument("--dispersion", type=bool, default=True, help="Measure hidden-unit dispersion.")
        parser.add_argument(
            "--predict_output",
            type=str | None,
            default=None,
            help="predict: where to write loglikes.scp (default runs/<name>/eval/<data>/predict).",
        )
        parser.add_argument(
            "--predict_what",
            type=Literal["log_likelihoods", "log_posteriors"],
            default="log_likelihoods",
            help="predict: log_likelihoods (for decoding) or log_posteriors.",
        )

    def _settings(self) -> Any:
        return self.config[self.subcommand] if self.subcommand else self.config

    def _run_name(self) -> str:
        config = self._settings()
        name = config.get("run_name") or run_name(config["model"])
        return f"{name}/{config['run_suffix']}" if config.get("run_suffix") else name

    def _evaluated_data(self, config: Any) -> str:
        """The data set a ``validate`` / ``test`` / ``predict`` evaluates, as the user named it."""
        data = config["data"]
        if self.subcommand == "validate":
            return str(data.get("valid_dir") or "valid")
        if self.subcommand == "predict":
            return str(data.get("predict_dir") or data.get("test_dir") or "predict")
        return str(data.get("test_dir") or "test")

    def _eval_dir(self, config: Any) -> Path:
        """``<run>/eval/<data>`` (``predict``: its ``predict/`` subfolder, beside test's files).

        The run is the one the evaluated checkpoint was saved in (``--ckpt_path runs/x/seed1/checkpoints/...``), else
        the configuration's (``runs/<name>``).
        """
        root = Path(config["trainer"].get("default_root_dir") or "runs")
        checkpoint = config.get("ckpt_path")
        run_dir = run_of_checkpoint(checkpoint) if isinstance(checkpoint, str) else None
        directory = eval_dir(run_dir or root / self._run_name(), self._evaluated_data(config))
        return directory / "predict" if self.subcommand == "predict" else directory

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        """Parses as LightningCLI does; a mistake ends in one line naming the closest option (a :class:`UserError`)."""
        subcommands = getattr(parser, "_subcommands_action", None)
        parsers = [parser, *(subcommands.choices.values() if subcommands is not None else [])]
        for each in parsers:
            each.exit_on_error = False
        try:
            super().parse_arguments(parser, args)
        except ArgumentError as error:
            command = next((a for a in (args or []) if a in EVALUATIONS or a == "fit"), "fit")
            options = [o for each in parsers for o in each._option_string_actions]
            raise UserError(explain_parse_error(str(error), command, options)) from error

    def _refuse_overwriting(self, config: Any, root: Path) -> None:
        """A new ``fit`` never writes into a run folder holding another run's checkpoints."""
        if self.subcommand != "fit" or config.get("ckpt_path") is not None or config["trainer"].get("fast_dev_run"):
            return
        if int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0:  # a requeued job resumes from hpc_ckpt_*.ckpt
            return
        run_dir = root / self._run_name()
        if has_checkpoints(run_dir):
            raise UserError(
                f"fit: {run_dir} already holds a trained run's checkpoints; resume it with --ckpt_path last, give"
                " this run another --run_name, or delete the folder"
            )

    def _evaluate_trained_model(self, config: Any, root: Path) -> None:
        """``validate`` / ``test`` / ``predict`` without ``--ckpt_path`` use the run's best checkpoint, or refuse."""
        if self.subcommand not in EVALUATIONS:
            return
        if _explicit_untrained(self.raw_args):
            log.warning("%s: evaluating the untrained network, as --ckpt_path none asks", self.subcommand)
            config["ckpt_path"] = None
            self._untrained = True
            return
        given = config.get("ckpt_path")
        if given is not None and not Path(str(given)).is_dir():
            return
        run_dir = Path(str(given)) if given is not None else root / self._run_name()
        best = best_checkpoint(run_dir)
        if best is None:
            raise UserError(
                f"{self.subcommand}: no trained checkpoint in {run_dir / CHECKPOINTS} (run `lightning-rectifier fit`"
                " with the same settings first, give --ckpt_path PATH, or --ckpt_path none to evaluate the untrained"
                " network)"
            )
        log.warning("%s: using the run's best checkpoint (lowest val/loss): %s", self.subcommand, best)
        config["ckpt_path"] = str(best)

    def before_instantiate_classes(self) -> None:
        """Adds the default callbacks, which depend on the run's name and options."""
        config = self._settings()
        root = Path(config["trainer"].get("default_root_dir") or "runs")
        self._evaluate_trained_model(config, root)
        self._refuse_overwriting(config, root)
        callbacks: list[Any] = [RunSummary(monitor="val/loss")]  # its "best" is the best checkpoint
        if not config["trainer"].get("fast_dev_run"):  # a smoke run writes nothing into run folders
            callbacks += checkpoint_callbacks(root / self._run_name() / "checkpoints", config)
        if config.get("dispersion", True):
            callbacks.append(DispersionMonitor())
        if self.subcommand == "predict":
            from lightning_rectifier.callbacks.prediction_writer import KaldiPredictionWriter

            out = config.get("predict_output") or self._eval_dir(config)
            log.warning("predict: writing %s to %s", config.get("predict_what"), out)
            callbacks.append(KaldiPredictionWriter(out, config.get("predict_what") or "log_likelihoods"))
        self.trainer_defaults["callbacks"] = callbacks

    def _initialise_untrained(self) -> None:
        """``--ckpt_path none``: the network as ``fit`` starts it, its input transform from the training frames."""
        if getattr(self, "_untrained", False) and self.model.hparams.get("input_norm", False):
            self.model.set_input_normalisation(*self.datamodule.input_moments())
            log.warning("%s: the untrained network's input transform is computed from the training frames, as fit"
                        " computes it", self.subcommand)  # fmt: skip

    def before_validate(self) -> None:
        """See :meth:`_initialise_untrained`."""
        self._initialise_untrained()

    def before_test(self) -> None:
        """See :meth:`_initialise_untrained`."""
        self._initialise_untrained()

    def before_predict(self) -> None:
        """See :meth:`_initialise_untrained`."""
        self._initialise_untrained()

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Creates the default loggers when none are configured.

        ``fit``: CSV in ``runs/<name>/version_<N>`` and W&B unless ``--wandb false``. ``validate`` / ``test`` /
        ``predict``: always CSV in ``<run>/eval/<data>`` (``predict``: ``eval/<data>/predict``) first, so that an
        evaluation's files land there and never join the training history; loggers the configuration names (W&B
        online, TensorBoard) follow it.
        """
        config = self._settings()
        if self.subcommand in EVALUATIONS:
            from lightning.pytorch.loggers import CSVLogger, Logger

            configured = self._get(self.config_init, "trainer", default={}).get("logger")
            others = [
                x for x in (configured if isinstance(configured, list) else [configured]) if isinstance(x, Logger)
            ]
            kwargs["logger"] = [CSVLogger(save_dir=str(self._eval_dir(config)), name="", version=""), *others]
        elif config["trainer"].get("logger") in (None, True):
            from lightning.pytorch.loggers import CSVLogger, WandbLogger

            root = str(config["trainer"].get("default_root_dir") or "runs")
            loggers: list[Any] = [CSVLogger(save_dir=root, name=self._run_name())]
            if config.get("wandb", True):
                model = config["model"]
                wandb_logger = WandbLogger(
                    save_dir=root,
                    name=self._run_name(),
                    group=config.get("run_name") or run_name(model),  # the repeats (seeds) of one configuration
                    tags=[str(model["nonlinearity"]), f"{model['num_layers']}x{model['hidden_dim']}"],
                    config={  # the seeds beside the model's hyperparameters, for grouping repeats in a workspace
                        "seed_everything": config.get("seed_everything"),
                        "data_seed": config["data"].get("seed"),
                        "split_seed": config["data"].get("split_seed"),
                    },
                    project=os.environ.get("WANDB_PROJECT", "lightning-rectifier"),
                    offline=not wandb_has_key() or os.environ.get("WANDB_MODE") == "offline",
                    log_model=False,
                )
                # Lightning always passes `anonymous`, which W&B deprecated (a warning in every run): leave it unset
                getattr(wandb_logger, "_wandb_init", {}).pop("anonymous", None)
                loggers.append(wandb_logger)
            kwargs["logger"] = loggers
            self.trainer_defaults["callbacks"].append(LearningRateMonitor(logging_interval="epoch"))
        return super().instantiate_trainer(**kwargs)


def _with_demo_config(args: list[str]) -> list[str]:
    """Inserts the demo recipe as the first ``--config`` when the user gave none."""
    if any(a in ("-c", "--config") or a.startswith("--config=") for a in args[1:]):
        return args
    return [args[0], "--config", str(DEMO_CONFIG), *args[1:]]


def run_lightning(args: list[str]) -> RectifierCLI:
    """Runs ``fit`` / ``validate`` / ``test`` / ``predict`` with the project's defaults."""
    for pattern in _NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DROP_TIPS)  # once: the same object
    if "--help" not in args and "-h" not in args:
        args = _with_demo_config(args)
    os.environ.setdefault("WANDB_SILENT", "true")
    if not wandb_has_key():
        os.environ.setdefault("WANDB_MODE", "offline")
    RectifierCLI.raw_args = list(args)
    return RectifierCLI(
        SenoneClassifier,
        AlignedFramesDataModule,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"default_root_dir": "runs"},
        auto_configure_optimizers=False,
        parser_kwargs={"description": "lightning-rectifier: rectifier DNN acoustic models on Kaldi data"},
        args=args,
    )


if __name__ == "__main__":  # pragma: no cover
    run_lightning(sys.argv[1:])
