"""``SenoneClassifier``: the paper's DNN acoustic model as a LightningModule.

Frame-level senone classification with cross-entropy and, by default, no regularisation and SGD with Nesterov
momentum (the paper trained with plain SGD; momentum is Kaldi nnet1's choice). Any optimizer or scheduler can be
injected from YAML through ``OptimizerCallable`` / ``LRSchedulerCallable``; plateau schedulers such as
:class:`~lightning_rectifier.schedulers.NewbobLR` are monitored on ``val/loss`` and may stop training.

Validation logs frame cross-entropy (``val/loss``), frame error and accuracy, reduced exactly across DDP processes by
torchmetrics. The paper's hidden-unit statistics (activation probability, dispersion) are measured in one place,
:class:`~lightning_rectifier.callbacks.DispersionMonitor` (the command line adds it), which reads the module's
``hidden_layers``, ``nonlinearity`` and ``saturation``.
``predict_step`` returns per-utterance log-posteriors and prior-scaled log-likelihoods for decoding.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Literal, NamedTuple, cast

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from torch.optim.lr_scheduler import ReduceLROnPlateau

from lightning_rectifier.metrics import FrameCrossEntropy, FrameErrorRate
from lightning_rectifier.nn import DNNAcousticModel, Nonlinearity


class UtteranceScores(NamedTuple):
    """Network outputs for one utterance, as :meth:`SenoneClassifier.predict_step` returns them."""

    key: str
    log_posteriors: Tensor
    """(frames, senones) float32 ``log p(s | x)``."""
    log_likelihoods: Tensor
    """(frames, senones) float32 ``log p(s | x) - log p(s)`` (scaled likelihoods, before any acoustic scale)."""


class SenoneClassifier(L.LightningModule):
    """A DNN senone classifier (input -> hidden layers -> senone logits) trained with frame cross-entropy.

    Args:
        input_dim: Spliced input dimension (link it from the datamodule's ``feat_dim``).
        num_senones: Number of senones (link it from the datamodule's ``num_senones``).
        hidden_dim: Units per hidden layer (the paper: 2048).
        num_layers: Hidden layers (the paper: 2, 3 and 4).
        nonlinearity: Hidden nonlinearity (the paper: ``tanh``, ``relu``, ``leaky_relu``).
        negative_slope: Leaky-ReLU slope (the paper: 0.01).
        dropout: Dropout after each hidden layer (the paper: none).
        init: Weight initialisation (see :class:`~lightning_rectifier.nn.DNNAcousticModel`).
        learning_rate: Learning rate of the default optimizer (Kaldi nnet1: 0.008).
        momentum: Nesterov momentum of the default optimizer.
        optimizer: Any optimizer (from YAML: ``class_path`` + ``init_args``); default SGD with Nesterov momentum.
        lr_scheduler: Any scheduler; plateau schedulers (``NewbobLR``, ``ReduceLROnPlateau``) watch ``monitor``.
        monitor: Metric a plateau scheduler watches.
        saturation: Activation rule for tanh / sigmoid units (paper's "neg" or "both") that
            :class:`~lightning_rectifier.callbacks.DispersionMonitor` applies to this module's hidden layers.
        input_norm: Normalise the spliced input to zero mean and unit variance with statistics of the training
            frames, as Kaldi nnet1's feature transform does (``<AddShift>`` + ``<Rescale>``); set from the datamodule
            when fitting, saved in the checkpoint and applied in every forward pass (test, predict, decode). False:
            the input goes in as the data pipeline leaves it (for ablations).
        minibatch_size: Frames per optimizer step when each loader batch holds several minibatches (set
            ``data.batch_size`` to a multiple): one Lightning step then runs one SGD update per minibatch of the
            batch, in order, under manual optimisation, so the host-side work of a Lightning step (gather, hooks,
            logging) is paid once per batch. The updates are exactly those of the plain loop with
            ``batch_size=minibatch_size`` (the same frames in the same order); ``global_step`` counts updates.
            Not with ``trainer.gradient_clip_val`` or ``accumulate_grad_batches`` (Lightning's automatic options).
            None: one update per loader batch, Lightning's usual loop.

    Example:
        >>> model = SenoneClassifier(input_dim=39, num_senones=10, hidden_dim=16, num_layers=2)
        >>> model(torch.randn(4, 39)).shape
        torch.Size([4, 10])
    """

    def __init__(
        self,
        input_dim: int,
        num_senones: int,
        hidden_dim: int = 2048,
        num_layers: int = 4,
        nonlinearity: Nonlinearity = "relu",
        negative_slope: float = 0.01,
        dropout: float = 0.0,
        init: Literal["auto", "kaiming", "xavier", "torch"] = "auto",
        learning_rate: float = 0.008,
        momentum: float = 0.9,
        optimizer: OptimizerCallable | None = None,
        lr_scheduler: LRSchedulerCallable | None = None,
        monitor: str = "val/loss",
        saturation: Literal["neg", "both"] = "neg",
        input_norm: bool = True,
        minibatch_size: int | None = None,
    ) -> None:
        super().__init__()
        if learning_rate <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"expected learning_rate > 0 and momentum in [0, 1), got {learning_rate}, {momentum}")
        if minibatch_size is not None and minibatch_size < 1:
            raise ValueError(f"expected minibatch_size >= 1 or None, got {minibatch_size}")
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.automatic_optimization = minibatch_size is None
        self.model = DNNAcousticModel(
            input_dim, num_senones, hidden_dim, num_layers, nonlinearity, negative_slope, dropout, init
        )
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        # log p(s); zeros (uniform, no effect) until set from the training alignments
        self.register_buffer("log_priors", torch.zeros(num_senones))
        self.register_buffer("has_priors", torch.tensor(False))
        # the input transform: x -> (x - mean) / std, identity until set from the training frames
        self.register_buffer("input_mean", torch.zeros(input_dim))
        self.register_buffer("input_inv_std", torch.ones(input_dim))
        # not a buffer: DDP would broadcast rank 0's value over every other rank's at each forward
        self.train_loss_sum = torch.zeros((), dtype=torch.float64)
        self.train_frames = 0
        self._resumed_epoch: int | None = None  # the epoch whose running loss a checkpoint restored
        self.metrics = torch.nn.ModuleDict(
            {
                stage: torch.nn.ModuleDict({"loss": FrameCrossEntropy(), "frame_error": FrameErrorRate()})
                for stage in ("val", "test")
            }
        )

    log_priors: Tensor
    has_priors: Tensor
    input_mean: Tensor
    input_inv_std: Tensor

    @property
    def _h(self) -> Any:
        """The saved hyperparameters with attribute access (Lightning types them as a plain mapping)."""
        return self.hparams

    def _metrics(self, stage: str) -> dict[str, Any]:
        return dict(cast(torch.nn.ModuleDict, self.metrics[stage]).items())

    # ------------------------------------------------------------------ the network

    @property
    def hidden_layers(self) -> torch.nn.ModuleList:
        """Hidden blocks whose outputs are post-nonlinearity activations (what ``DispersionMonitor`` listens to)."""
        return self.model.hidden_layers

    @property
    def nonlinearity(self) -> str:
        """Name of the hidden nonlinearity."""
        return self.model.nonlinearity

    @property
    def saturation(self) -> str:
        """Activation rule of tanh / sigmoid units for the hidden-unit statistics ("neg" or "both")."""
        return str(self.hparams["saturation"])

    def normalise(self, features: Tensor) -> Tensor:
        """The input transform (see ``input_norm``); the identity when it is off."""
        if not self._h.input_norm:
            return features
        return (features - self.input_mean.to(features.dtype)) * self.input_inv_std.to(features.dtype)

    def set_input_normalisation(self, mean: Tensor, std: Tensor, floor: float = 1e-5) -> None:
        """Sets the input transform from the spliced training input's mean and standard deviation.

        Dimensions with a standard deviation below ``floor`` (constant inputs) are only shifted.
        """
        if mean.shape != self.input_mean.shape or std.shape != self.input_mean.shape:
            raise ValueError(f"expected {self.input_mean.numel()} means and deviations, got {tuple(mean.shape)}")
        if not (torch.isfinite(mean).all() and torch.isfinite(std).all()):
            raise ValueError("the input statistics are not finite")
        self.input_mean.copy_(mean.to(self.input_mean))
        self.input_inv_std.copy_(torch.where(std < floor, torch.ones_like(std), 1.0 / std).to(self.input_inv_std))

    def forward(self, features: Tensor) -> Tensor:
        """Senone logits for spliced frames ``(frames, input_dim)``."""
        return self.model(self.normalise(features))

    def set_priors(self, priors: Tensor) -> None:
        """Stores senone priors (probabilities, already floored) for :meth:`predict_step`; saved in checkpoints."""
        if priors.shape != self.log_priors.shape:
            raise ValueError(f"expected {self.log_priors.numel()} priors (one per senone), got {tuple(priors.shape)}")
        self.log_priors.copy_(priors.double().log().to(self.log_priors))
        self.has_priors.fill_(True)

    def setup(self, stage: str) -> None:
        """Takes the senone priors from the datamodule (when it has them) before training or prediction."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if stage == "fit" and datamodule is not None and hasattr(datamodule, "priors"):
            self.set_priors(datamodule.priors)
        if stage == "fit" and self._h.input_norm and datamodule is not None and hasattr(datamodule, "input_moments"):
            self.set_input_normalisation(*datamodule.input_moments())

    # ------------------------------------------------------------------ steps

    @staticmethod
    def _unpack(batch: Any) -> tuple[Tensor, Tensor]:
        return batch[0], batch[1]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """Frame cross-entropy on a batch of (spliced features, senone labels); per minibatch with minibatch_size."""
        features, targets = self._unpack(batch)
        if not self.automatic_optimization:
            return self._minibatch_updates(features, targets)
        loss = torch.nn.functional.cross_entropy(self(features), targets)
        self._account(loss.detach() * targets.numel(), targets.numel(), loss)
        return loss

    def _minibatch_updates(self, features: Tensor, targets: Tensor) -> Tensor:
        """``minibatch_size`` mode: SGD updates over consecutive minibatches of one loader batch, in order."""
        optimizer = cast(torch.optim.Optimizer, self.optimizers())
        size = int(self._h.minibatch_size)
        summed = torch.zeros((), dtype=torch.float64, device=features.device)
        for chunk, labels in zip(features.split(size), targets.split(size), strict=True):
            loss = torch.nn.functional.cross_entropy(self(chunk), labels)
            optimizer.zero_grad()
            self.manual_backward(loss)
            optimizer.step()
            summed += loss.detach().double() * labels.numel()
        mean = (summed / targets.numel()).float()
        self._account(summed, targets.numel(), mean)
        return mean

    def _account(self, loss_sum: Tensor, frames: int, loss: Tensor) -> None:
        """Adds to the epoch's loss (on the device: no per-step host synchronisation) and logs ``train/loss``."""
        if self.train_loss_sum.device != loss_sum.device:
            self.train_loss_sum = self.train_loss_sum.to(loss_sum.device)
        self.train_loss_sum += loss_sum
        self.train_frames += frames
        every = getattr(self.trainer, "log_every_n_steps", 1)  # set by Lightning at run time
        if (self.global_step + 1) % every == 0 or not self.automatic_optimization:  # the steps loggers get
            self.log("train/loss", loss, prog_bar=True, batch_size=frames)

    def on_train_epoch_start(self) -> None:
        """Starts the epoch's loss average (or goes on with a resumed one); refuses to go on after a diverged epoch."""
        value = self.trainer.callback_metrics.get("train/loss_epoch")
        if value is not None and not math.isfinite(float(value)):
            raise FloatingPointError(
                "the training loss is not finite: lower the learning rate or check the features for outliers"
            )
        resumed, self._resumed_epoch = self._resumed_epoch, None
        if resumed != self.current_epoch:  # a checkpoint of a finished epoch resumes in the next one
            self.train_loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
            self.train_frames = 0

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Saves the running epoch loss, summed over DDP processes, so a mid-epoch resume logs the whole epoch's mean.

        Lightning calls this on every process (only global rank 0 writes the file), so the sum is a collective.
        """
        frames = torch.tensor(float(self.train_frames), dtype=torch.float64, device=self.train_loss_sum.device)
        totals = torch.stack([self.train_loss_sum.double(), frames])
        if self.trainer.world_size > 1:
            totals = self.trainer.strategy.reduce(totals.to(self.device), reduce_op="sum")
        checkpoint["train_epoch_loss"] = {
            "epoch": int(self.current_epoch),
            "loss_sum": float(totals[0]),
            "frames": int(totals[1]),
            "world_size": int(self.trainer.world_size),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Reads what the checkpoint adds to the weights; called before the weights are loaded.

        A checkpoint from before the input transform gets the identity transform (its network saw raw input). This
        process's share of the running epoch loss is restored (DDP shares are equal: an even split is exact).
        """
        state = checkpoint.get("state_dict")
        if isinstance(state, dict) and "input_mean" not in state:
            state["input_mean"] = torch.zeros_like(self.input_mean)
            state["input_inv_std"] = torch.ones_like(self.input_inv_std)
        saved = checkpoint.get("train_epoch_loss")
        if not saved or not saved.get("frames"):
            return
        world = max(int(getattr(self._trainer, "world_size", 1) if self._trainer else 1), 1)
        self.train_loss_sum = torch.tensor(float(saved["loss_sum"]) / world, dtype=torch.float64)
        self.train_frames = int(saved["frames"]) // world
        self._resumed_epoch = int(saved.get("epoch", -1))

    def on_train_epoch_end(self) -> None:
        """Logs ``train/loss_epoch``: the frame-weighted epoch mean, averaged over DDP processes (equal shares).

        With ``minibatch_size`` (manual optimisation, where Lightning steps no scheduler), steps the scheduler here,
        after the epoch's validation, as Lightning's epoch interval does.
        """
        if self.train_frames:
            self.log("train/loss_epoch", (self.train_loss_sum / self.train_frames).float(), sync_dist=True)
        scheduler = self.lr_schedulers() if not self.automatic_optimization else None
        if scheduler is not None:
            metric = self.trainer.callback_metrics.get(self._h.monitor)
            plateau = isinstance(scheduler, ReduceLROnPlateau)  # NewbobLR is one
            if not plateau or metric is not None:  # a plateau scheduler waits for a validation
                self.lr_scheduler_step(scheduler, metric if plateau else None)

    def _evaluate(self, stage: str, batch: Any) -> None:
        features, targets = self._unpack(batch)
        logits = self(features)
        metrics = self._metrics(stage)
        metrics["loss"].update(logits, targets)
        metrics["frame_error"].update(logits, targets)

    def _log_evaluation(self, stage: str) -> None:
        metrics = self._metrics(stage)
        values: dict[str, Tensor] = {
            f"{stage}/loss": metrics["loss"].compute(),
            f"{stage}/frame_error": metrics["frame_error"].compute(),
        }
        values[f"{stage}/frame_accuracy"] = 1.0 - values[f"{stage}/frame_error"]
        for metric in metrics.values():
            metric.reset()
        # already reduced across processes by torchmetrics' compute()
        shown = {f"{stage}/loss", f"{stage}/frame_error"}
        self.log_dict({k: v.float() for k, v in values.items() if k in shown}, prog_bar=True, sync_dist=False)
        self.log_dict({k: v.float() for k, v in values.items() if k not in shown}, sync_dist=False)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Accumulates cross-entropy and frame error over the validation frames."""
        self._evaluate("val", batch)

    def on_validation_epoch_end(self) -> None:
        """Logs ``val/loss``, ``val/frame_error`` and ``val/frame_accuracy``."""
        self._log_evaluation("val")

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """As :meth:`validation_step`, for the test set."""
        self._evaluate("test", batch)

    def on_test_epoch_end(self) -> None:
        """Logs the ``test/...`` metrics."""
        self._log_evaluation("test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> list[UtteranceScores]:
        """Per-utterance log-posteriors and scaled log-likelihoods ``log p(s|x) - log p(s)``.

        Expects an :class:`~lightning_rectifier.data.frame_store.UtteranceBatch` (keys, features, lengths).
        """
        if not bool(self.has_priors):
            warnings.warn("no senone priors set: log-likelihoods equal log-posteriors", stacklevel=2)
        log_posteriors = torch.log_softmax(self(batch.features).float(), dim=-1)
        log_likelihoods = log_posteriors - self.log_priors.float()
        out = []
        for key, posteriors, likelihoods in zip(
            batch.keys,
            log_posteriors.split(batch.lengths.tolist()),
            log_likelihoods.split(batch.lengths.tolist()),
            strict=True,
        ):
            out.append(UtteranceScores(key, posteriors.cpu(), likelihoods.cpu()))
        return out

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> Any:
        """The injected optimizer (default: SGD, Nesterov momentum) and scheduler; plateau ones watch ``monitor``."""
        optimizer: torch.optim.Optimizer
        if self.optimizer_factory is None:
            optimizer = torch.optim.SGD(
                self.parameters(),
                lr=self._h.learning_rate,
                momentum=self._h.momentum,
                nesterov=self._h.momentum > 0,
            )
        else:
            optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        config: dict[str, Any] = {"scheduler": scheduler, "interval": "epoch"}
        if isinstance(scheduler, ReduceLROnPlateau) and self.automatic_optimization:  # manual: stepped here
            config["monitor"] = self._h.monitor
        return {"optimizer": optimizer, "lr_scheduler": config}

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Steps the scheduler; a scheduler that says ``should_stop`` (Kaldi's newbob) ends training."""
        if metric is None:
            scheduler.step()
        else:
            scheduler.step(metric)
        if getattr(scheduler, "should_stop", False):
            self.trainer.should_stop = True
