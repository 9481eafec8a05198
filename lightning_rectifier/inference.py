"""From a checkpoint and a data directory to scaled log-likelihoods, words and word error rate.

A checkpoint of :class:`~lightning_rectifier.SenoneClassifier` trained with :class:`AlignedFramesDataModule` holds
everything needed to turn a new data directory into network input (CMVN mode, deltas, context, feature dimension)
and the senone priors, so decoding needs no access to the training data. The decoding graph is a Kaldi ``HCLG.fst``
(with ``words.txt`` and, for transition-id graphs, ``final.mdl``), a graph file labelled with senone ids + 1, or, for
models trained on the embedded demo corpus, the corpus's digit grammar built from its senone lexicon.
:class:`DecodeTestSet` does the same inside ``lightning-rectifier test``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn

from lightning_rectifier.data.datamodule import AlignedFramesDataModule
from lightning_rectifier.data.demo import PREFIX as DEMO_PREFIX
from lightning_rectifier.module import SenoneClassifier

log = logging.getLogger(__name__)
Precision = Literal["32", "bf16"]


@dataclass
class AcousticModel:
    """A trained model with the data settings it was trained with (from its checkpoint)."""

    model: SenoneClassifier
    data_hparams: dict[str, Any]
    data_state: dict[str, Any]
    path: str = ""

    @classmethod
    def load(cls, checkpoint: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> AcousticModel:
        """Loads a checkpoint written by ``lightning-rectifier fit`` (or any fit with the project's datamodule).

        The file is read with ``weights_only=True`` (see :mod:`lightning_rectifier.checkpoint`): one that names code
        to run is refused before anything in it runs.

        Raises:
            FileNotFoundError: If the file does not exist.
            ValueError: If it is not a SenoneClassifier checkpoint with the datamodule's settings, is empty or
                truncated, names objects outside the weights-only allow-list, or its weights disagree with its
                hyperparameters.
        """
        from lightning_rectifier.checkpoint import CheckpointError, read_checkpoint, senone_classifier_from_checkpoint

        path = Path(checkpoint)
        raw = read_checkpoint(path, map_location)  # weights only: a crafted file cannot run code
        data_hparams = raw.get("datamodule_hyper_parameters")
        if data_hparams is None:
            raise CheckpointError(
                f"{path}: the checkpoint has no datamodule settings (CMVN, deltas, context); it must come from a fit"
                " with AlignedFramesDataModule"
            )
        model = senone_classifier_from_checkpoint(raw, path)
        hparams = {k: v for k, v in dict(data_hparams).items() if not k.startswith("_")}
        return cls(model, hparams, dict(raw.get(AlignedFramesDataModule.__qualname__, {})), str(path))

    @property
    def num_senones(self) -> int:
        """Network outputs."""
        return int(self.model._h.num_senones)

    @property
    def trained_on_demo(self) -> bool:
        """Whether the model was trained on the embedded demo corpus."""
        return str(self.data_hparams.get("train_dir", "")).startswith(DEMO_PREFIX)

    def datamodule(self, data_dir: str, **overrides: Any) -> AlignedFramesDataModule:
        """A datamodule preparing ``data_dir`` exactly as the training data was prepared."""
        hparams = {**self.data_hparams, "predict_dir": data_dir, **overrides}
        dm = AlignedFramesDataModule(**hparams)
        dm.load_state_dict(self.data_state)
        return dm


def compute_loglikelihoods(
    model: AcousticModel,
    data_dir: str,
    *,
    device: str = "auto",
    precision: Precision = "32",
    max_frames: int = 8192,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Scaled log-likelihoods ``log p(s|x) - log p(s)`` and log-posteriors of every utterance of ``data_dir``.

    Args:
        model: The trained model.
        data_dir: A Kaldi data directory (``feats.scp`` at least; prepared like the training data).
        device: ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``...
        precision: ``"32"`` or ``"bf16"`` (autocast; on GPUs).
        max_frames: Frames per forward pass (whole utterances are packed).

    Returns:
        (log-likelihoods, log-posteriors), each utterance -> float32 (frames, senones).

    Raises:
        ValueError: If the data's feature dimension is not the model's.
    """
    target = torch.device(
        "cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device
    )
    dm = model.datamodule(data_dir, eval_batch_size=max_frames, store_device="cpu")
    if dm.feat_dim != model.model._h.input_dim:
        raise ValueError(
            f"{data_dir}: prepared features have dimension {dm.feat_dim}, the model {model.path} expects"
            f" {model.model._h.input_dim} (different features or context?)"
        )
    dm.setup("predict")
    network = model.model.to(target)
    if not bool(network.has_priors):
        log.warning("%s has no senone priors: log-likelihoods equal log-posteriors", model.path)
    likelihoods: dict[str, np.ndarray] = {}
    posteriors: dict[str, np.ndarray] = {}
    autocast = torch.autocast(target.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.inference_mode(), autocast:
        for batch in dm.predict_dataloader():
            batch = batch._replace(features=batch.features.to(target, non_blocking=True))
            for scores in network.predict_step(batch, 0):
                likelihoods[scores.key] = scores.log_likelihoods.numpy()
                posteriors[scores.key] = scores.log_posteriors.numpy()
    return likelihoods, posteriors


def demo_graph(num_senones: int, grammar: Literal["word", "loop"] = "loop", insertion_penalty: float = 0.0) -> Any:
    """The embedded corpus's digit grammar: its senone lexicon, optional silence, self-loops from its alignments."""
    from lightning_rectifier.data.demo import lexicon_path, resolve_data_dir, silence_senones
    from lightning_rectifier.data.kaldi_io import read_alignments
    from lightning_rectifier.decode import build_graph, estimate_self_loop_probs
    from lightning_rectifier.lexicon import read_lexicon

    alignments = [v for _, v in read_alignments(f"scp:{resolve_data_dir('fsdd:train')}/ali.scp")]
    return build_graph(
        read_lexicon(lexicon_path()),
        grammar,
        num_senones=num_senones,
        silence=list(silence_senones()),
        self_loop_prob=estimate_self_loop_probs(alignments, num_senones),
        insertion_penalty=insertion_penalty,
    )


def load_graph(
    graph: str,
    *,
    num_senones: int,
    words: str | None = None,
    transition_model: str | None = None,
) -> Any:
    """A Kaldi ``HCLG.fst`` over transition-ids (with ``transition_model``) or a graph over senone ids + 1."""
    from lightning_rectifier.decode import DecodingGraph, read_kaldi_graph, read_words

    if transition_model is not None:
        return read_kaldi_graph(graph, transition_model, words)
    words_path = words or str(Path(graph).parent / "words.txt")
    return DecodingGraph.read(graph, read_words(words_path), num_senones)


def graph_builder(
    *,
    num_senones: int,
    graph: str | None = None,
    words: str | None = None,
    transition_model: str | None = None,
    trained_on_demo: bool = False,
    grammar: Literal["word", "loop"] = "loop",
) -> Callable[[float], Any]:
    """A function from insertion penalty to decoding graph: ``graph`` loaded once, or the demo digit grammar.

    Raises:
        ValueError: Without ``graph`` for a model not trained on the embedded corpus (there is no default grammar).
    """
    if graph is not None:
        loaded = load_graph(graph, num_senones=num_senones, words=words, transition_model=transition_model)
        return lambda penalty: loaded.with_insertion_penalty(penalty) if penalty else loaded
    if not trained_on_demo:
        raise ValueError(
            "no decoding graph given, and the model was not trained on the embedded demo corpus whose digit grammar"
            " would be used: pass a graph (HCLG.fst with words.txt, and final.mdl for transition-id graphs)"
        )
    return lambda penalty: demo_graph(num_senones, grammar, penalty)


@dataclass
class DecodeReport:
    """What ``decode`` did: hypotheses, WER (when the data has transcripts) and the settings used."""

    hypotheses: dict[str, str]
    wer: dict[str, Any] | None
    settings: dict[str, Any]
    files: list[str] = field(default_factory=list)


def decode_directory(
    checkpoint: str,
    data_dir: str,
    out_dir: str,
    *,
    graph: str | None = None,
    words: str | None = None,
    transition_model: str | None = None,
    grammar: Literal["word", "loop"] = "loop",
    acoustic_scale: float = 0.1,
    insertion_penalty: float = 0.0,
    beam: float = 13.0,
    max_active: int = 7000,
    num_workers: int = 0,
    tune_dir: str | None = None,
    write_loglikes: bool = False,
    device: str = "auto",
    precision: Precision = "32",
) -> DecodeReport:
    """Decodes a data directory with a trained model: ``hyp.txt``, ``ali.ark`` and, given a transcript, ``wer.json``.

    With ``tune_dir`` (a validation data directory with a ``text``), acoustic scale and insertion penalty are first
    chosen by a grid search there (as Kaldi's scoring does over LM weight and word insertion penalty).
    Writes only into ``out_dir`` (the command line's default is the run's ``eval/<data>/decode``, see
    :mod:`lightning_rectifier.run_layout`).
    """
    from lightning_rectifier.data.datadir import read_kaldi_map
    from lightning_rectifier.data.demo import resolve_data_dir
    from lightning_rectifier.data.kaldi_io import write_alignments
    from lightning_rectifier.decode import Decoder, DecoderOptions, grid_search, word_error_rate, write_text
    from lightning_rectifier.decode.export import write_loglikelihoods

    model = AcousticModel.load(checkpoint)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    build = graph_builder(
        num_senones=model.num_senones,
        graph=graph,
        words=words,
        transition_model=transition_model,
        trained_on_demo=model.trained_on_demo,
        grammar=grammar,
    )
    settings: dict[str, Any] = {"acoustic_scale": acoustic_scale, "insertion_penalty": insertion_penalty}
    if tune_dir is not None:
        tune_likelihoods, _ = compute_loglikelihoods(model, tune_dir, device=device, precision=precision)
        references = read_kaldi_map(Path(resolve_data_dir(tune_dir)) / "text", multi=True)
        search = grid_search(
            build,
            tune_likelihoods,
            references,
            options=DecoderOptions(beam=beam, max_active=max_active),
            num_workers=num_workers,
        )
        settings = {"acoustic_scale": search.acoustic_scale, "insertion_penalty": search.insertion_penalty}
        (out / "grid.json").write_text(json.dumps(search.to_dict(), indent=2) + "\n")
        log.info("tuned on %s: acoustic scale %s, insertion penalty %s", tune_dir, *settings.values())
    decoding_graph = build(settings["insertion_penalty"])
    likelihoods, _ = compute_loglikelihoods(model, data_dir, device=device, precision=precision)
    if write_loglikes:
        write_loglikelihoods(f"ark,scp:{out / 'loglikes.ark'},{out / 'loglikes.scp'}", likelihoods)
    decoder = Decoder(
        decoding_graph, DecoderOptions(beam=beam, max_active=max_active, acoustic_scale=settings["acoustic_scale"])
    )
    result = decoder.decode_many(likelihoods, num_workers=num_workers)
    hypotheses = result.text()
    write_text(out / "hyp.txt", hypotheses)
    write_alignments(
        f"ark,scp:{out / 'ali.ark'},{out / 'ali.scp'}", ((k, h.alignment) for k, h in result.hypotheses.items())
    )
    log.info(
        "decoded %d utterances (%d frames) at %.0f frames/s (%.0fx real time), %d without a final state",
        len(hypotheses),
        result.num_frames,
        result.frames_per_second,
        1.0 / max(result.real_time_factor, 1e-12),
        len(result.not_final),
    )
    files = ["hyp.txt", "ali.ark", "ali.scp"] + (["loglikes.ark", "loglikes.scp"] if write_loglikes else [])
    failed = result.not_final  # no path to a final state, or no finite cost
    (out / "failed.txt").write_text("".join(f"{key}\n" for key in failed))
    files.append("failed.txt")
    wer = None
    text_file = Path(resolve_data_dir(data_dir)) / "text"
    if text_file.exists():
        scored = word_error_rate(read_kaldi_map(text_file, multi=True), hypotheses)
        wer = {
            **scored.to_dict(),
            **settings,
            "data_dir": data_dir,
            "checkpoint": str(checkpoint),
            "failed_utterances": len(failed),
        }
        (out / "wer.json").write_text(json.dumps(wer, indent=2) + "\n")
        files.append("wer.json")
        log.debug("%s", scored)  # the command line prints it
    return DecodeReport(hypotheses, wer, settings, files)


class DecodeTestSet(Callback):
    """Decodes the test set when ``test`` runs and logs word error rate: ``test/wer`` and its parts.

    Add it to a run to make ``lightning-rectifier test`` report WER next to frame error (the demo recipe does)::

        trainer:
          callbacks:
            - class_path: lightning_rectifier.inference.DecodeTestSet
              init_args: {graph: exp/tri4/graph/HCLG.fst, words: exp/tri4/graph/words.txt,
                          transition_model: exp/tri4_ali/final.mdl}

    Without ``graph``, a model trained on the embedded corpus decodes with the corpus's digit grammar. The utterances
    decoded are those of the test set as loaded for ``test`` (an utterance skipped for want of an alignment is not
    decoded; ``lightning-rectifier decode`` decodes every utterance of a directory). Each DDP process decodes its share
    of them; error counts are summed, so the WER is exact. ``hyp.txt`` and ``wer.json`` go to ``<log_dir>/decode/``.

    Args:
        graph: Decoding graph (Kaldi ``HCLG.fst`` or a senone-labelled FST); None: the demo digit grammar.
        words: The graph's ``words.txt`` (default: next to the graph).
        transition_model: ``final.mdl`` of an HCLG over transition-ids.
        grammar: ``word`` (isolated words) or ``loop`` (connected words), for the demo grammar.
        acoustic_scale: Scale of the log-likelihoods.
        insertion_penalty: Cost added per word.
        beam: Decoding beam.
        max_active: Most active states per frame.

    Example:
        >>> DecodeTestSet(grammar="word").grammar
        'word'
    """

    def __init__(
        self,
        graph: str | None = None,
        words: str | None = None,
        transition_model: str | None = None,
        grammar: Literal["word", "loop"] = "loop",
        acoustic_scale: float = 0.1,
        insertion_penalty: float = 0.0,
        beam: float = 13.0,
        max_active: int = 7000,
    ) -> None:
        if acoustic_scale <= 0 or beam <= 0:
            raise ValueError(f"expected acoustic_scale > 0 and beam > 0, got {acoustic_scale}, {beam}")
        self.graph, self.words, self.transition_model = graph, words, transition_model
        self.grammar, self.acoustic_scale, self.insertion_penalty = grammar, acoustic_scale, insertion_penalty
        self.beam, self.max_active = beam, max_active
        self.last: dict[str, float] = {}

    def _decoding_graph(self, trainer: Trainer, num_senones: int) -> Any:
        train_dir = str(getattr(getattr(trainer, "datamodule", None), "hparams", {}).get("train_dir", ""))
        build = graph_builder(
            num_senones=num_senones,
            graph=self.graph,
            words=self.words,
            transition_model=self.transition_model,
            trained_on_demo=train_dir.startswith(DEMO_PREFIX),
            grammar=self.grammar,
        )
        return build(self.insertion_penalty)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Decodes this process's share of the test utterances and logs the summed error counts."""
        from lightning_rectifier.data.frame_store import UtteranceLoader
        from lightning_rectifier.decode import Decoder, DecoderOptions, word_error_rate, write_text

        dm = getattr(trainer, "datamodule", None)
        if not isinstance(dm, AlignedFramesDataModule) or "test" not in dm.stores:
            raise ValueError("DecodeTestSet needs an AlignedFramesDataModule with a test set (data.test_dir)")
        references = dm.data_dir(dm._h.test_dir).text
        if references is None:
            rank_zero_warn(f"DecodeTestSet: {dm._h.test_dir} has no text file: nothing to score")
            return
        decoder = Decoder(
            self._decoding_graph(trainer, int(pl_module.hparams["num_senones"])),
            DecoderOptions(beam=self.beam, max_active=self.max_active, acoustic_scale=self.acoustic_scale),
        )
        loader = UtteranceLoader(dm.stores["test"], dm._h.eval_batch_size, rank=trainer.global_rank,
                                 world_size=trainer.world_size)  # fmt: skip
        likelihoods: dict[str, np.ndarray] = {}
        with torch.inference_mode():
            for batch in loader:
                batch = batch._replace(features=batch.features.to(pl_module.device))
                for scores in pl_module.predict_step(batch, 0):
                    likelihoods[scores.key] = scores.log_likelihoods.numpy()
        hypotheses = decoder.decode_many(likelihoods).text()
        mine = {key: references.get(key, "") for key in hypotheses}
        result = word_error_rate(mine, hypotheses)
        counts = torch.tensor(
            [result.substitutions, result.deletions, result.insertions, result.num_words, result.sentence_errors,
             result.num_sentences], dtype=torch.float64, device=pl_module.device,
        )  # fmt: skip
        counts = trainer.strategy.reduce(counts, reduce_op="sum")
        substitutions, deletions, insertions, words, sentence_errors, sentences = counts.tolist()
        self.last = {
            "test/wer": (substitutions + deletions + insertions) / max(words, 1),
            "test/substitutions": int(substitutions),
            "test/deletions": int(deletions),
            "test/insertions": int(insertions),
            "test/num_words": int(words),
            "test/sentence_error_rate": sentence_errors / max(sentences, 1),
        }
        pl_module.log_dict(self.last, sync_dist=False)  # already summed over processes
        log_dir = trainer.log_dir  # a broadcast under DDP: every process reads it
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            shares: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(shares, hypotheses)  # hyp.txt holds every process's utterances
            hypotheses = {key: text for share in shares for key, text in share.items()}
        if trainer.is_global_zero and not getattr(trainer, "fast_dev_run", False):  # a smoke run writes no files
            out = Path(log_dir or trainer.default_root_dir) / "decode"
            out.mkdir(parents=True, exist_ok=True)
            write_text(out / "hyp.txt", hypotheses)
            wer: dict[str, Any] = {key.split("/")[1]: value for key, value in self.last.items()}
            wer.update(
                data_dir=dm._h.test_dir,
                acoustic_scale=self.acoustic_scale,
                insertion_penalty=self.insertion_penalty,
                checkpoint=trainer.ckpt_path,
            )
            (out / "wer.json").write_text(json.dumps(wer, indent=2) + "\n")
