"""``AlignedFramesDataModule``: Kaldi data directories and alignments in, shuffled spliced frame batches out.

Training batches are drawn from a :class:`~lightning_rectifier.data.frame_store.FrameStore` by a fresh global frame
permutation each epoch, split into equal disjoint shares across DDP processes. When the trainer runs on a GPU the
store moves there and splicing happens on the GPU. The cheap properties ``feat_dim`` and ``num_senones`` read only
headers (and alignments), so ``LightningCLI.link_arguments`` can size the model before ``setup()``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import random
import sys
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info

from lightning_rectifier.data.archive import parse_rspecifier
from lightning_rectifier.data.chunked import ChunkedFrameLoader
from lightning_rectifier.data.corpus import (
    LoadPlan,
    LoadReport,
    StoreDtype,
    load_frame_store_from_plan,
    plan_frame_store,
    priors_from_counts,
    senone_priors,
)
from lightning_rectifier.data.datadir import KaldiDataDir
from lightning_rectifier.data.demo import resolve_data_dir
from lightning_rectifier.data.errors import KaldiDataError
from lightning_rectifier.data.frame_cache import (
    FrameCache,
    cache_builders,
    cache_key,
    file_fingerprints,
    table_files,
    write_frame_cache,
)
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
        loader_threads: torch's intra-op threads while the training loader gathers a batch in host memory
            (restored after each batch, so the model's own operations keep torch's setting). ``"auto"``: one when
            several processes train (DDP: they share the node's cores), torch's setting otherwise. A gather is many
            small row copies: on the 2-core test machine a second thread gathers 1.7x faster when the cores are
            free and 2.5x slower beside one busy process (``benchmarks/data_pipeline.py --load``); set 1 on a
            shared machine. A store on a GPU gathers there, whatever this says.
        cache_dir: Folder of frame caches (:mod:`~lightning_rectifier.data.frame_cache`): each set is prepared once
            into a file keyed by its inputs and these settings, and later runs (and every DDP process of a node)
            map that file instead of loading the archives. Built by ``prepare_data`` (Lightning runs it on one
            process per node) or ``lightning-rectifier cache``; a changed input or setting builds a new one.
        cache_workers: Processes that build a cache (default: one per core).
        chunk_frames: Train from the cache chunk by chunk, never holding the whole training set in memory (corpora
            larger than RAM; needs ``cache_dir``): utterances are grouped into chunks of about this many frames,
            see :class:`~lightning_rectifier.data.chunked.ChunkedFrameLoader`. ``None``: map the whole set.
        window_chunks: Chunks whose frames are shuffled together in chunked mode (memory holds two windows: the one
            training and the next one, read in the background).
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
        loader_threads: int | Literal["auto"] | None = "auto",
        cache_dir: str | None = None,
        cache_workers: int | None = None,
        chunk_frames: int | None = None,
        window_chunks: int = 4,
    ) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if length_tolerance < 0:
            raise ValueError(f"length_tolerance must be >= 0, got {length_tolerance}")
        if chunk_frames is not None and (cache_dir is None or chunk_frames < 1 or window_chunks < 1):
            raise ValueError(
                "chunked training needs cache_dir, chunk_frames >= 1 and window_chunks >= 1; got"
                f" cache_dir={cache_dir!r}, chunk_frames={chunk_frames}, window_chunks={window_chunks}"
            )
        # num_senones is the model's hyperparameter; the resolved value is checkpointed through state_dict()
        self.save_hyperparameters(ignore=["num_senones"])
        self.pipeline = FeaturePipeline(
            cmvn, norm_vars, delta_order, delta_window, left_context, right_context, cmvn_stats=cmvn_stats
        )
        self._dirs: dict[str, KaldiDataDir] = {}
        self._alignment_cache: dict[str, dict[str, np.ndarray]] = {}
        self._transition_model: TransitionModel | None = None
        self._num_senones: int | None = num_senones
        self._given_num_senones = num_senones
        self._global_cmvn: np.ndarray | None = None
        self._priors: torch.Tensor | None = None
        self.stores: dict[str, FrameStore] = {}
        self.reports: dict[str, LoadReport] = {}
        self.caches: dict[str, FrameCache] = {}
        self._found_caches: dict[str, FrameCache | None] = {}  # looked up before setup, for the sizes

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
        """Dimension of the features on disk (from the training cache when there is one: no header is read)."""
        if (cache := self._existing_cache("train")) is not None:
            return int(cache.meta["raw_dim"])
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
            if (cache := self._existing_cache("train")) is not None and cache.meta["num_senones"]:
                self._num_senones = int(cache.meta["num_senones"])
            elif self.transition_model is not None:
                self._num_senones = self.transition_model.num_pdfs
            elif (counted := self._num_pdfs_file()) is not None:
                self._num_senones = counted
            else:
                labels = self._alignments("train")
                self._num_senones = 1 + max((int(v.max()) for v in labels.values() if v.size), default=-1)
                if self._num_senones == 0:
                    raise KaldiDataError(f"{self._alignment_spec('train')}: no alignments to count senones from")
        return self._num_senones

    def _num_pdfs_places(self) -> list[Path]:
        """Where an aligner's ``num_pdfs`` file may be: next to the training alignments, in the training directory."""
        spec = self._alignment_spec("train")
        first = spec[0] if isinstance(spec, list) else spec
        return [Path(parse_rspecifier(first)[1]).parent, Path(resolve_data_dir(self._h.train_dir))]

    def _num_pdfs_file(self) -> int | None:
        """The senone count an aligner wrote next to the training alignments (``num_pdfs``), if there is one."""
        for place in self._num_pdfs_places():
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
            if "train" not in self.stores and "train" not in self.caches:
                self.setup("fit")
            if "train" in self.caches and (counts := self.caches["train"].label_counts) is not None:
                self._priors = priors_from_counts(counts, self.num_senones, self._h.prior_floor)
            else:
                labels = self.stores["train"].labels
                assert labels is not None
                self._priors = senone_priors(labels, self.num_senones, self._h.prior_floor)
        return self._priors

    def input_moments(self, max_frames: int = 2_000_000) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation (float64) of the spliced network input over the training frames.

        What Kaldi nnet1's feature transform (``<AddShift>`` + ``<Rescale>``) is computed from: the statistics of
        the *spliced* input, so edge-frame repetition is included. Over at most ``max_frames`` frames (every ``k``-th
        utterance of larger sets: :meth:`FrameStore.input_moments`); a frame cache holds them from its build.
        Runs ``setup("fit")`` if needed.
        """
        if "train" not in self.stores and "train" not in self.caches:
            self.setup("fit")
        if "train" in self.caches and (moments := self.caches["train"].moments(max_frames)) is not None:
            return moments
        if "train" not in self.stores:  # chunked, and the cache was built without them
            self.stores["train"] = self.caches["train"].store()
        return self.stores["train"].input_moments(max_frames)

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

    def _parts(self, stage: str | None) -> list[tuple[str, str, str, bool]]:
        """The sets a stage needs and has not loaded: (split, directory, part of it, labelled).

        The part is ``"all"``, or ``"train-part"`` / ``"held-out"`` of a ``valid_fraction`` split.
        """
        h = self._h
        parts: list[tuple[str, str, str, bool]] = []
        if stage in ("fit", "validate", None) and "train" not in self.stores and "train" not in self.caches:
            held = h.valid_dir is None and h.valid_fraction > 0
            parts.append(("train", h.train_dir, "train-part" if held else "all", True))
            if h.valid_dir is not None:
                parts.append(("valid", h.valid_dir, "all", True))
            elif held:
                parts.append(("valid", h.train_dir, "held-out", True))
        if stage in ("test", None) and h.test_dir is not None and "test" not in self.stores:
            parts.append(("test", h.test_dir, "all", True))
        if stage == "predict" and "predict" not in self.stores:
            directory = h.predict_dir or h.test_dir or h.valid_dir
            if directory is None:
                raise ValueError("prediction needs predict_dir (or test_dir / valid_dir) to be set")
            parts.append(("predict", directory, "all", False))
        return parts

    def _utterances(self, directory: str, part: str) -> list[str] | None:
        """The utterances of a part (None: all of the directory)."""
        if part == "all":
            return None
        h = self._h
        train, held = split_held_out(self.data_dir(directory), h.valid_fraction, h.valid_split, h.split_seed)
        return train if part == "train-part" else held

    def _plan(self, split: str, directory: str, utterances: list[str] | None, labelled: bool) -> LoadPlan:
        h = self._h
        if self.pipeline.cmvn == "global" and self._global_cmvn is None and split != "train":
            raise KaldiDataError("cmvn='global' needs the training set's statistics: set up 'fit' first")
        return plan_frame_store(
            self.data_dir(directory),
            self._alignments(split) if labelled else None,
            pipeline=self.pipeline,
            utterances=utterances,
            num_senones=self.num_senones if labelled else None,
            length_tolerance=h.length_tolerance,
            skip_invalid=h.skip_invalid,
            global_stats=self._global_cmvn,
            alignment_source=str(self._alignment_spec(split)) if labelled else "",
        )

    def _load(self, split: str, directory: str, part: str, labelled: bool) -> None:
        h = self._h
        if h.cache_dir is not None:
            cache = self._cache(split, directory, part, labelled, build=True)
            if cache is None:  # an empty held-out part
                return
            self.caches[split] = cache
            if not (split == "train" and h.chunk_frames):
                self.stores[split] = cache.store()
            report = cache.report()
        else:
            utterances = self._utterances(directory, part)
            if utterances is not None and not utterances:
                return
            plan = self._plan(split, directory, utterances, labelled)
            self.stores[split], report = load_frame_store_from_plan(plan, dtype=h.store_dtype)
        if split == "train" and report.global_stats is not None:
            self._global_cmvn = report.global_stats  # applied as they are to every other set
        report.source = str(directory)  # as the user named it (fsdd:train, not the package's folder)
        self.reports[split] = report
        rank_zero_info(f"[{split}] {report.summary()}")

    def _setup_threads(self) -> int | None:
        threads = self._h.setup_threads
        if threads == "auto":
            return 1 if self._h.delta_order > 0 else None
        return threads

    def setup(self, stage: str | None = None) -> None:
        """Loads the stores the stage needs (on every process): from the archives, or by mapping their caches.

        Runs with ``setup_threads`` torch threads (one by default): see the class docstring.
        """
        with torch_threads(self._setup_threads()):
            for split, directory, part, labelled in self._parts(stage):
                self._load(split, directory, part, labelled)
        self._alignment_cache.clear()  # the stores hold the labels now

    # ---------------------------------------------------------------- frame caches

    def _cache_path(self, split: str, directory: str, part: str, labelled: bool) -> tuple[Path, dict[str, Any]]:
        """Where the cache of a set is, and the description of its inputs and settings that keys it."""
        h = self._h
        folder = Path(resolve_data_dir(directory))
        files = [*table_files(folder / "feats.scp"), folder / "utt2spk"]
        if (folder / "cmvn.scp").is_file():
            files += table_files(folder / "cmvn.scp")
        alignments = None
        if labelled:
            spec = self._alignment_spec(split)
            specs = spec if isinstance(spec, list) else [spec]
            alignments = file_fingerprints(file for one in specs for file in table_files(one))
        global_stats = None
        if split != "train" and self.pipeline.cmvn == "global" and self._global_cmvn is not None:
            global_stats = hashlib.sha256(np.ascontiguousarray(self._global_cmvn).tobytes()).hexdigest()
        cmvn_stats = self.pipeline.cmvn_stats
        description = {
            "split": split,
            "part": part,
            "held_out": None if part == "all" else [h.valid_fraction, h.valid_split, h.split_seed],
            "directory": [str(directory), file_fingerprints(files)],
            "alignments": alignments,
            "transition_model": None if h.transition_model is None else file_fingerprints([h.transition_model]),
            "num_pdfs": file_fingerprints(place / "num_pdfs" for place in self._num_pdfs_places()),
            # the other sets are checked against the training set's senone count, wherever it came from
            "num_senones": self._given_num_senones if split == "train" or not labelled else self.num_senones,
            "pipeline": dataclasses.asdict(self.pipeline),
            "cmvn_stats": None if cmvn_stats is None else file_fingerprints([cmvn_stats]),
            "global_stats": global_stats,
            "length_tolerance": h.length_tolerance,
            "skip_invalid": h.skip_invalid,
            "dtype": h.store_dtype,
        }
        return Path(h.cache_dir) / f"{split}-{cache_key(description)}", description

    def _cache(self, split: str, directory: str, part: str, labelled: bool, *, build: bool) -> FrameCache | None:
        """The set's cache: opened when it exists, else built (``build``) or None; None also for an empty part."""
        path, description = self._cache_path(split, directory, part, labelled)
        if (path / "meta.json").is_file():
            return FrameCache.open(path)
        if not build:
            return None
        utterances = self._utterances(directory, part)
        if utterances is not None and not utterances:
            return None
        features = self.data_dir(directory).features  # the header pass tells the frames, and so the workers
        wanted = None if utterances is None else set(utterances)
        frames = sum(entry.num_rows for entry in features if wanted is None or entry.key in wanted)
        # started before the plan, so that they start up while it reads the alignments and CMVN statistics
        with cache_builders(self._h.cache_workers, frames) or contextlib.nullcontext() as pool:
            plan = self._plan(split, directory, utterances, labelled)
            return write_frame_cache(
                plan,
                path,
                dtype=self._h.store_dtype,
                description=description,
                num_senones=self.num_senones if labelled else None,
                workers=1 if pool is None else None,
                progress=sys.stderr.isatty(),
                pool=pool,
            )

    def _existing_cache(self, split: str) -> FrameCache | None:
        """The training cache, if caching is on and it is built (read before ``setup`` for the sizes)."""
        if self._h.cache_dir is None:
            return None
        if split in self.caches:
            return self.caches[split]
        if split not in self._found_caches:
            h = self._h
            part = "train-part" if h.valid_dir is None and h.valid_fraction > 0 else "all"
            try:
                self._found_caches[split] = self._cache(split, h.train_dir, part, True, build=False)
            except KaldiDataError:  # no alignments to key it by (prediction only, say): the headers will do
                self._found_caches[split] = None
        return self._found_caches[split]

    def prepare_data(self) -> None:
        """With ``cache_dir``: builds the caches of the training, validation and test sets that are missing.

        Lightning runs this on one process per node before ``setup``, so the processes of a node then map one
        cache. Without ``cache_dir`` there is nothing to prepare.
        """
        if self._h.cache_dir is None:
            return
        with torch_threads(self._setup_threads()):
            for split, directory, part, labelled in self._parts(None):
                cache = self._cache(split, directory, part, labelled, build=True)
                if split == "train" and cache is not None and cache.global_stats is not None:
                    self._global_cmvn = cache.global_stats  # keys the other sets' caches

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

    def _gather_threads(self, world_size: int) -> int | None:
        threads = self._h.loader_threads
        if threads == "auto":
            return 1 if world_size > 1 else None
        return threads

    def train_dataloader(self) -> FrameLoader | ChunkedFrameLoader:
        """Shuffled spliced frames, a fresh permutation per epoch (chunk by chunk with ``chunk_frames``)."""
        h = self._h
        if h.chunk_frames is not None:
            if "train" not in self.caches:
                raise RuntimeError("no train data: call setup() first")
            trainer = self.trainer
            rank, world = (0, 1) if trainer is None else (trainer.global_rank, trainer.world_size)
            device = None if trainer is None else trainer.strategy.root_device
            return ChunkedFrameLoader(
                self.caches["train"],
                h.batch_size,
                chunk_frames=h.chunk_frames,
                window_chunks=h.window_chunks,
                seed=h.seed,
                rank=rank,
                world_size=world,
                device=device if h.store_device == "auto" and device is not None and device.type != "cpu" else None,
                gather_threads=self._gather_threads(world),
            )
        store = self._store("train")
        rank, world = self._placement(store)
        return FrameLoader(
            store, h.batch_size, self._gather_threads(world), shuffle=True, seed=h.seed, rank=rank, world_size=world
        )

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
