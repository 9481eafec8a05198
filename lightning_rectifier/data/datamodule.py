"""``AlignedFramesDataModule``: Kaldi data directories and alignments in, shuffled spliced frame batches out.

Training batches are drawn from a :class:`~lightning_rectifier.data.frame_store.FrameStore` by a fresh global frame
permutation each epoch, split into equal disjoint shares across DDP processes. When the trainer runs on a GPU the
store moves there and splicing happens on the GPU. The cheap properties ``feat_dim`` and ``num_senones`` read only
headers (and alignments), so ``LightningCLI.link_arguments`` can size the model before ``setup()``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info

from lightning_rectifier.data.archive import parse_rspecifier
from lightning_rectifier.data.corpus import LoadReport, StoreDtype, load_frame_store, senone_priors
from lightning_rectifier.data.datadir import KaldiDataDir
from lightning_rectifier.data.demo import resolve_data_dir
from lightning_rectifier.data.errors import KaldiDataError
from lightning_rectifier.data.frame_store import FrameStore
from lightning_rectifier.data.kaldi_io import read_alignments
from lightning_rectifier.data.loaders import FrameLoader, UtteranceLoader
from lightning_rectifier.data.pipeline import CmvnMode, FeaturePipeline
from lightning_rectifier.data.runtime import torch_threads
from lightning_rectifier.data.transition_model import TransitionModel

_ALIGNMENT_NAMES = ("ali.scp", "ali.ark", "pdf.scp", "pdf.ark", "ali.*.gz")


def find_alignments(data_dir: Path) -> str:
    """Finds the alignment archive a data directory carries (``ali.scp``, ``ali.ark``, ``pdf.*``, ``ali.*.gz``).

    Raises:
        KaldiDataError: If there is none; the message lists the names tried.
    """
    for name in _ALIGNMENT_NAMES:
        if any(data_dir.glob(name)):
            return str(data_dir / name)
    raise KaldiDataError(
        f"{data_dir}: no alignments given and none found in the data directory (tried {', '.join(_ALIGNMENT_NAMES)});"
        " pass alignments= (for example exp/tri4_ali/ali.*.gz with transition_model=exp/tri4_ali/final.mdl)"
    )


def split_held_out(
    data: KaldiDataDir, fraction: float, by: Literal["speaker", "utterance"], seed: int
) -> tuple[list[str], list[str]]:
    """Splits a data directory's utterances into training and held-out lists (seeded, deterministic).

    With ``by="speaker"`` whole speakers are held out (Kaldi nnet1's ``subset_data_dir_tr_cv.sh --cv-spk-percent``)
    until at least ``fraction`` of the utterances are held out.

    Returns:
        (training utterances, held-out utterances), each in ``feats.scp`` order.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {fraction}")
    utterances = data.utterances
    rng = random.Random(seed)
    target = round(fraction * len(utterances))
    if by == "utterance":
        held = set(rng.sample(utterances, target))
    elif by == "speaker":
        speakers = sorted(data.speakers)
        rng.shuffle(speakers)
        per_speaker: dict[str, int] = {}
        for utt in utterances:
            per_speaker[data.utt2spk[utt]] = per_speaker.get(data.utt2spk[utt], 0) + 1
        chosen: set[str] = set()
        count = 0
        for speaker in speakers:
            if count >= target:
                break
            chosen.add(speaker)
            count += per_speaker[speaker]
        if target and len(chosen) == len(speakers):
            raise KaldiDataError(
                f"{data.path}: holding out {fraction:.0%} by speaker would leave no training speaker"
                f" ({len(speakers)} speakers); use valid_split='utterance' or a validation directory"
            )
        held = {utt for utt in utterances if data.utt2spk[utt] in chosen}
    else:
        raise ValueError(f"valid_split must be 'speaker' or 'utterance', got {by!r}")
    return [u for u in utterances if u not in held], [u for u in utterances if u in held]


class AlignedFramesDataModule(L.LightningDataModule):
    """Frame-level senone classification data from Kaldi data directories and alignments.

    Args:
        train_dir: Kaldi data directory of the training set (``feats.scp``, ``utt2spk``, ``cmvn.scp``...). Data
            directories named ``fsdd:<split>`` are the embedded demo corpus (see :mod:`lightning_rectifier.data.demo`);
            the default trains on it.
        alignments: Training alignments: a file, glob (``exp/tri4_ali/ali.*.gz``), rspecifier, or list of them.
            Default: ``ali.scp``/``ali.ark``/``pdf.*``/``ali.*.gz`` inside ``train_dir``.
        transition_model: ``final.mdl`` whose transition model maps transition-id alignments to pdf-ids. Leave
            unset for pdf-id archives (``ali-to-pdf`` output).
        valid_dir: Validation data directory. Without it, ``valid_fraction`` of the training set is held out.
        valid_alignments: Validation alignments (default: ``alignments``, which often covers both sets).
        valid_fraction: Fraction held out when there is no ``valid_dir`` (0 disables validation).
        valid_split: Hold out whole speakers (Kaldi nnet1's choice) or random utterances.
        test_dir: Test data directory (labelled: alignments from ``test_alignments`` or inside the directory).
        test_alignments: Test alignments.
        predict_dir: Data directory to compute posteriors for (unlabelled is fine); default ``test_dir``.
        num_senones: Number of senones (network outputs). Default: the transition model's pdf count, else the count
            in a ``num_pdfs`` file next to the alignments (``lightning-rectifier align`` writes one), else the
            largest training label + 1.
        cmvn: CMVN mode; see :class:`~lightning_rectifier.data.corpus.FeaturePipeline`. ``"auto"`` applies the data
            directory's ``cmvn.scp`` when present, else per-speaker statistics computed from the features.
        cmvn_stats: A Kaldi CMVN statistics file applied to every set (global CMVN from a file).
        norm_vars: Normalise variances as well as means.
        delta_order: ``add-deltas`` order (0 = none, 2 = deltas and delta-deltas).
        delta_window: ``add-deltas`` window.
        left_context: Frames of left context (Kaldi nnet1 splices +-5).
        right_context: Frames of right context.
        batch_size: Training frames per batch and process (Kaldi nnet1: 256).
        eval_batch_size: Frames per validation / test batch; frames per prediction batch (whole utterances).
        length_tolerance: Frame-count difference between features and alignment trimmed away (0: mismatch is an
            error; Kaldi tools often use 5).
        skip_invalid: Skip (and count) bad utterances instead of raising.
        store_dtype: Storage type of the features in memory (``float16`` halves memory).
        store_device: ``"auto"``: keep the training data on the trainer's device (splicing on the GPU);
            ``"cpu"``: keep it in host memory (for corpora larger than GPU memory).
        seed: Seed of the per-epoch frame shuffling (the data order).
        split_seed: Seed of the held-out split (``valid_fraction``), kept apart from ``seed`` so that runs with
            different seeds are compared on the same development set.
        prior_floor: Floor of the senone priors (Kaldi: 1e-10).
        allow_pipes: Allow scp/rspecifier entries that are shell commands (refused by default).
        setup_threads: torch's intra-op threads while ``setup`` loads the data (restored afterwards). ``"auto"``:
            one thread when deltas are computed (many small per-utterance operations, which a second thread slows
            down 3x on a busy 2-core machine: ``benchmarks/setup_threads.py``), torch's setting otherwise (without
            deltas two threads load 1.2-1.5x faster); a number: that many; ``None``: torch's setting.
    """

    def __init__(
        self,
        train_dir: str = "fsdd:train",
        alignments: str | list[str] | None = None,
        transition_model: str | None = None,
        valid_dir: str | None = None,
        valid_alignments: str | list[str] | None = None,
        valid_fraction: float = 0.1,
        valid_split: Literal["speaker", "utterance"] = "speaker",
        test_dir: str | None = None,
        test_alignments: str | list[str] | None = None,
        predict_dir: str | None = None,
        num_senones: int | None = None,
        cmvn: CmvnMode = "auto",
        cmvn_stats: str | None = None,
        norm_vars: bool = False,
        delta_order: int = 0,
        delta_window: int = 2,
        left_context: int = 5,
        right_context: int = 5,
        batch_size: int = 256,
        eval_batch_size: int = 4096,
        length_tolerance: int = 0,
        skip_invalid: bool = False,
        store_dtype: StoreDtype = "float32",
        store_device: Literal["auto", "cpu"] = "auto",
        seed: int = 0,
        split_seed: int = 0,
        prior_floor: float = 1e-10,
        allow_pipes: bool = False,
        setup_threads: int | Literal["auto"] | None = "auto",
    ) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if length_tolerance < 0:
            raise ValueError(f"length_tolerance must be >= 0, got {length_tolerance}")
        # num_senones is the model's hyperparameter; the resolved value is checkpointed through state_dict()
        self.save_hyperparameters(ignore=["num_senones"])
        self.pipeline = FeaturePipeline(
            cmvn, norm_vars, delta_order, delta_window, left_context, right_context, cmvn_stats=cmvn_stats
        )
        self._dirs: dict[str, KaldiDataDir] = {}
        self._alignment_cache: dict[str, dict[str, np.ndarray]] = {}
        self._transition_model: TransitionModel | None = None
        self._num_senones: int | None = num_senones
        self._global_cmvn: np.ndarray | None = None
        self._priors: torch.Tensor | None = None
        self.stores: dict[str, FrameStore] = {}
        self.reports: dict[str, LoadReport] = {}

    @property
    def _h(self) -> Any:
        """The saved hyperparameters with attribute access (Lightning types them as a plain mapping)."""
        return self.hparams

    # ---------------------------------------------------------------- cheap properties (headers only)

    def data_dir(self, path: str) -> KaldiDataDir:
        """The (cached) :class:`KaldiDataDir` at ``path`` (``fsdd:<split>``: the embedded corpus)."""
        if path not in self._dirs:
            self._dirs[path] = KaldiDataDir.load(resolve_data_dir(path), allow_pipes=self._h.allow_pipes)
        return self._dirs[path]

    @property
    def transition_model(self) -> TransitionModel | None:
        """The parsed ``transition_model``, if one was given."""
        if self._transition_model is None and self._h.transition_model is not None:
            self._transition_model = TransitionModel.read(self._h.transition_model)
        return self._transition_model

    @property
    def raw_feat_dim(self) -> int:
        """Dimension of the features on disk."""
        return self.data_dir(self._h.train_dir).feat_dim

    @property
    def feat_dim(self) -> int:
        """Network input dimension: raw dimension x (delta order + 1) x (left + 1 + right)."""
        return self.pipeline.output_dim(self.raw_feat_dim)

    @property
    def num_senones(self) -> int:
        """Number of senones: given; else the transition model's pdf count; else an aligner's ``num_pdfs`` file.

        The ``num_pdfs`` file is looked for next to the training alignments and in the training directory; without
        any of these, the largest training label + 1.
        """
        if self._num_senones is None:
            if self.transition_model is not None:
                self._num_senones = self.transition_model.num_pdfs
            elif (counted := self._num_pdfs_file()) is not None:
                self._num_senones = counted
            else:
                labels = self._alignments("train")
                self._num_senones = 1 + max((int(v.max()) for v in labels.values() if v.size), default=-1)
                if self._num_senones == 0:
                    raise KaldiDataError(f"{self._alignment_spec('train')}: no alignments to count senones from")
        return self._num_senones

    def _num_pdfs_file(self) -> int | None:
        """The senone count an aligner wrote next to the training alignments (``num_pdfs``), if there is one."""
        spec = self._alignment_spec("train")
        first = spec[0] if isinstance(spec, list) else spec
        places = [Path(parse_rspecifier(first)[1]).parent, Path(resolve_data_dir(self._h.train_dir))]
        for place in places:
            if (place / "num_pdfs").is_file():
                text = (place / "num_pdfs").read_text().strip()
                if not text.isdigit() or int(text) < 1:
                    raise KaldiDataError(f"{place / 'num_pdfs'}: expected a positive integer, got {text!r}")
                return int(text)
        return None

    @property
    def priors(self) -> torch.Tensor:
        """Senone priors (float64, floored) from the training frames as loaded; runs ``setup("fit")`` if needed."""
        if self._priors is None:
            if "train" not in self.stores:
                self.setup("fit")
            labels = self.stores["train"].labels
            assert labels is not None
            self._priors = senone_priors(labels, self.num_senones, self._h.prior_floor)
        return self._priors

    def input_moments(self, max_frames: int = 2_000_000) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation (float64) of the spliced network input over the training frames.

        What Kaldi nnet1's feature transform (``<AddShift>`` + ``<Rescale>``) is computed from: the statistics of
        the *spliced* input, so edge-frame repetition is included. Over at most ``max_frames`` frames, evenly
        strided through the training set (all of them for smaller sets). Runs ``setup("fit")`` if needed.
        """
        if "train" not in self.stores:
            self.setup("fit")
        store = self.stores["train"]
        step = max(1, -(-store.num_frames // max_frames))
        index = torch.arange(0, store.num_frames, step)
        total = torch.zeros(self.feat_dim, dtype=torch.float64)
        squares = torch.zeros(self.feat_dim, dtype=torch.float64)
        for chunk in index.split(65_536):
            x = store.gather(chunk).features.double().cpu()
            total += x.sum(0)
            squares += (x * x).sum(0)
        mean = total / len(index)
        std = (squares / len(index) - mean * mean).clamp(min=0).sqrt()
        return mean, std

    # ---------------------------------------------------------------- loading

    def _alignment_spec(self, split: str) -> str | list[str]:
        h = self._h
        spec = {"train": h.alignments, "valid": h.valid_alignments or h.alignments, "test": h.test_alignments}[split]
        if spec is None:
            directory = {"train": h.train_dir, "valid": h.valid_dir or h.train_dir, "test": h.test_dir}[split]
            spec = find_alignments(Path(resolve_data_dir(directory)))
        return spec

    def _alignments(self, split: str) -> dict[str, np.ndarray]:
        spec = self._alignment_spec(split)
        key = repr(spec)
        if key not in self._alignment_cache:
            alignments: dict[str, np.ndarray] = {}
            for utterance, labels in read_alignments(
                spec, transition_model=self.transition_model, allow_pipes=self._h.allow_pipes
            ):
                if utterance in alignments:
                    raise KaldiDataError(f"{spec}: utterance {utterance!r} has two alignments")
                alignments[utterance] = labels
            self._alignment_cache[key] = alignments
        return self._alignment_cache[key]

    def _load(self, split: str, directory: str, utterances: Sequence[str] | None, labelled: bool) -> None:
        h = self._h
        data = self.data_dir(directory)
        alignments = self._alignments(split) if labelled else None
        if self.pipeline.cmvn == "global" and self._global_cmvn is None and split != "train":
            raise KaldiDataError("cmvn='global' needs the training set's statistics: set up 'fit' first")
        store, report = load_frame_store(
            data,
            alignments,
            pipeline=self.pipeline,
            utterances=list(utterances) if utterances is not None else None,
            num_senones=self.num_senones if labelled else None,
            length_tolerance=h.length_tolerance,
            skip_invalid=h.skip_invalid,
            dtype=h.store_dtype,
            global_stats=self._global_cmvn,
            alignment_source=str(self._alignment_spec(split)) if labelled else "",
        )
        if split == "train" and report.global_stats is not None:
            self._global_cmvn = report.global_stats  # applied as they are to every other set
        report.source = str(directory)  # as the user named it (fsdd:train, not the package's folder)
        self.stores[split], self.reports[split] = store, report
        rank_zero_info(f"[{split}] {report.summary()}")

    def setup(self, stage: str | None = None) -> None:
        """Loads the stores the stage needs (on every process; each holds the whole set in memory).

        Runs with ``setup_threads`` torch threads (one by default): see the class docstring.
        """
        threads = self._h.setup_threads
        if threads == "auto":
            threads = 1 if self._h.delta_order > 0 else None
        with torch_threads(threads):
            self._setup(stage)

    def _setup(self, stage: str | None) -> None:
        h = self._h
        if stage in ("fit", "validate", None) and "train" not in self.stores:
            train = self.data_dir(h.train_dir)
            train_utts: list[str] | None = None
            valid_utts: list[str] | None = None
            if h.valid_dir is None and h.valid_fraction > 0:
                train_utts, valid_utts = split_held_out(train, h.valid_fraction, h.valid_split, h.split_seed)
            self._load("train", h.train_dir, train_utts, labelled=True)
            if h.valid_dir is not None:
                self._load("valid", h.valid_dir, None, labelled=True)
            elif valid_utts:
                self._load("valid", h.train_dir, valid_utts, labelled=True)
        if stage in ("test", None) and h.test_dir is not None and "test" not in self.stores:
            self._load("test", h.test_dir, None, labelled=True)
        if stage == "predict" and "predict" not in self.stores:
            directory = h.predict_dir or h.test_dir or h.valid_dir
            if directory is None:
                raise ValueError("prediction needs predict_dir (or test_dir / valid_dir) to be set")
            self._load("predict", directory, None, labelled=False)
        self._alignment_cache.clear()  # the stores hold the labels now

    # ---------------------------------------------------------------- loaders

    def _placement(self, store: FrameStore) -> tuple[int, int]:
        """Moves ``store`` to the training device (when allowed) and returns (rank, world size)."""
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        device = trainer.strategy.root_device
        if self._h.store_device == "auto" and device.type != "cpu":
            store.to(device)
        return trainer.global_rank, trainer.world_size

    def _store(self, split: str) -> FrameStore:
        if split not in self.stores:
            raise RuntimeError(f"no {split} data: call setup() first, or configure the {split} set")
        return self.stores[split]

    def train_dataloader(self) -> FrameLoader:
        """Shuffled spliced frames, a fresh permutation per epoch."""
        store = self._store("train")
        rank, world = self._placement(store)
        return FrameLoader(store, self._h.batch_size, shuffle=True, seed=self._h.seed, rank=rank, world_size=world)

    def val_dataloader(self) -> FrameLoader | list[Any]:
        """Validation frames in order (every frame exactly once across processes)."""
        if "valid" not in self.stores:
            return []
        store = self.stores["valid"]
        rank, world = self._placement(store)
        return FrameLoader(store, self._h.eval_batch_size, shuffle=False, rank=rank, world_size=world)

    def test_dataloader(self) -> FrameLoader:
        """Test frames in order."""
        store = self._store("test")
        rank, world = self._placement(store)
        return FrameLoader(store, self._h.eval_batch_size, shuffle=False, rank=rank, world_size=world)

    def predict_dataloader(self) -> UtteranceLoader:
        """Whole utterances of the prediction set, packed up to ``eval_batch_size`` frames."""
        store = self._store("predict")
        rank, world = self._placement(store)
        return UtteranceLoader(store, self._h.eval_batch_size, rank=rank, world_size=world)

    # ---------------------------------------------------------------- checkpointed state

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to prepare new data as in training: sizes, global CMVN and priors."""
        state: dict[str, Any] = {"raw_feat_dim": self.raw_feat_dim, "num_senones": self.num_senones}
        if self._global_cmvn is not None:
            state["global_cmvn"] = torch.from_numpy(self._global_cmvn)
        if self._priors is not None or "train" in self.stores:
            state["priors"] = self.priors
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores global CMVN statistics and priors from a checkpoint."""
        if "global_cmvn" in state_dict:
            self._global_cmvn = state_dict["global_cmvn"].numpy()
        if "priors" in state_dict:
            self._priors = state_dict["priors"]
        self._num_senones = int(state_dict.get("num_senones", self._num_senones or 0)) or self._num_senones
