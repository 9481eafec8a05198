"""From a checkpoint and a data directory to words and word error rate: the graph, the decoder, the output files.

The decoding graph is a Kaldi ``HCLG.fst`` (with ``words.txt`` and, for transition-id graphs, ``final.mdl``), a graph
file labelled with senone ids + 1, or, for models trained on the embedded demo corpus, the corpus's digit grammar
built from its senone lexicon. :class:`~lightning_rectifier.callbacks.DecodeTestSet` does the same inside
``lightning-rectifier test``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from lightning_rectifier.data.demo import resolve_data_dir
from lightning_rectifier.data.kaldi_io import write_alignments
from lightning_rectifier.data.tables import read_kaldi_map
from lightning_rectifier.decode.acoustic_model import AcousticModel, Precision, compute_loglikelihoods
from lightning_rectifier.decode.decoder import Decoder, DecoderOptions, DecodingResult
from lightning_rectifier.decode.export import write_loglikelihoods
from lightning_rectifier.decode.graph import DecodingGraph
from lightning_rectifier.decode.lattice import LatticeOptions
from lightning_rectifier.decode.lattice_run import LatticeGrid, choose_setting, decode_lattices, write_lattice_decoding
from lightning_rectifier.decode.scoring import word_error_rate, write_text

__all__ = ["DecodeReport", "decode_directory", "decode_with_lattices", "demo_graph", "graph_builder", "load_graph"]

log = logging.getLogger(__name__)


def demo_graph(num_senones: int, grammar: Literal["word", "loop"] = "loop", insertion_penalty: float = 0.0) -> Any:
    """The embedded corpus's digit grammar: its senone lexicon, optional silence, self-loops from its alignments."""
    from lightning_rectifier.data.demo import lexicon_path, resolve_data_dir, silence_senones
    from lightning_rectifier.data.kaldi_io import read_alignments
    from lightning_rectifier.decode import build_graph, estimate_self_loop_probs
    from lightning_rectifier.decode.lexicon import read_lexicon

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
    lattices: bool = False,
    lattice_beam: float = 8.0,
    min_lmwt: float = 7,
    max_lmwt: float = 17,
    word_ins_penalty: str = "0.0,0.5,1.0",
) -> DecodeReport:
    """Decodes a data directory with a trained model: ``hyp.txt``, ``ali.ark`` and, given a transcript, ``wer.json``.

    Scaled log-likelihoods (log-posteriors minus the log priors of the training alignments) go through
    kaldi-decoder's FasterDecoder at one setting; or, with ``lattices`` or ``tune_dir``, to lattices (``lat.1.gz``)
    scored at every LM weight x insertion penalty as Kaldi's ``score_kaldi.sh`` does (:mod:`.lattice_run`). With
    ``tune_dir`` (a development data directory with a ``text``), that is decoded to lattices first and its best
    setting is the one applied here (``wer.json`` says where it was chosen; ``scoring_kaldi/best_wer`` is the best on
    this set itself, Kaldi's optimistic figure). Writes only into ``out_dir`` (the command line's default is the run's
    ``eval/<data>/decode``, see :mod:`lightning_rectifier.compare.run_layout`). ``lightning-rectifier decode``'s
    options are generated from this signature and these descriptions.

    Args:
        checkpoint: Checkpoint of a trained model (written by ``fit``).
        data_dir: Data directory to decode (``fsdd:<split>`` for the demo corpus).
        out_dir: Where to write ``hyp.txt``, ``ali.ark``/``ali.scp``, ``failed.txt`` and ``wer.json``.
        graph: Decoding graph: a Kaldi ``HCLG.fst`` (const or vector) or a senone-labelled FST; None: the demo
            corpus's digit grammar.
        words: ``words.txt`` of the graph (default: next to the graph).
        transition_model: ``final.mdl`` of an HCLG over transition-ids.
        grammar: Demo grammar without a graph: ``loop`` (connected digits) or ``word`` (one digit).
        acoustic_scale: Scale of the log-likelihoods (Kaldi: 0.1); with lattices, the search's (LM weight 1 / scale).
        insertion_penalty: Cost added per word.
        beam: Decoding beam.
        max_active: Most active states per frame (FasterDecoder; the lattice search has no such bound).
        num_workers: Decoding worker processes (0: in this process).
        tune_dir: Choose LM weight and insertion penalty by WER on this data directory's lattices first.
        write_loglikes: Also write ``loglikes.ark``/``loglikes.scp`` (Kaldi float matrices) for Kaldi's decoders.
        device: ``auto`` (a GPU when available), ``cpu``, ``cuda``, ``cuda:1``...
        precision: Network precision: ``32`` or ``bf16``.
        lattices: Decode to lattices and score the whole grid (implied by ``tune_dir``).
        lattice_beam: Paths kept in the lattices: within this of the best (Kaldi: 8).
        min_lmwt: Smallest LM weight scored (Kaldi's ``--min-lmwt``).
        max_lmwt: Largest LM weight scored (Kaldi's ``--max-lmwt``).
        word_ins_penalty: Insertion penalties scored, comma-separated (Kaldi's ``--word-ins-penalty``).

    Returns:
        The hypotheses, the WER record (None without a transcript), the settings used and the files written.
    """
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
    if lattices or tune_dir is not None:
        search = LatticeOptions(beam=beam, lattice_beam=lattice_beam, acoustic_scale=acoustic_scale)
        grid = LatticeGrid.kaldi(min_lmwt, max_lmwt, word_ins_penalty)
        return decode_with_lattices(
            lambda d: compute_loglikelihoods(model, d, device=device, precision=precision)[0],
            build(0.0), data_dir, out, search, grid, (1 / acoustic_scale, insertion_penalty), tune_dir,
            {"data_dir": data_dir, "checkpoint": str(checkpoint)}, num_workers=num_workers,
        )  # fmt: skip
    options = DecoderOptions(beam=beam, max_active=max_active, acoustic_scale=acoustic_scale)
    settings: dict[str, Any] = {"acoustic_scale": acoustic_scale, "insertion_penalty": insertion_penalty}
    likelihoods, _ = compute_loglikelihoods(model, data_dir, device=device, precision=precision)
    decoder = Decoder(build(settings["insertion_penalty"]), replace(options, acoustic_scale=settings["acoustic_scale"]))
    result = decoder.decode_many(likelihoods, num_workers=num_workers)
    files = _write_decoding(out, result, likelihoods if write_loglikes else None)
    wer = _score(out, data_dir, result, {**settings, "data_dir": data_dir, "checkpoint": str(checkpoint)})
    files += ["wer.json"] if wer is not None else []
    return DecodeReport(result.text(), wer, settings, files)


def decode_with_lattices(
    likelihoods_of: Callable[[str], dict[str, Any]],
    graph: DecodingGraph,
    data_dir: str,
    out: Path,
    search: LatticeOptions,
    grid: LatticeGrid,
    setting: tuple[float, float],
    tune_dir: str | None,
    sources: dict[str, Any],
    *,
    num_workers: int = 0,
) -> DecodeReport:
    """Decodes ``data_dir`` to lattices and scores them (the setting chosen on ``tune_dir``, else ``setting``).

    The lattice path of :func:`decode_directory` and of the GMM baseline: ``likelihoods_of`` turns a data directory
    into per-utterance log-likelihoods of the graph's senones; ``sources`` go into ``wer.json``.
    """
    chosen_on = None
    if tune_dir is not None:
        tune_lattices = decode_lattices(graph, likelihoods_of(tune_dir), search, num_workers=num_workers)
        tune_references = read_kaldi_map(Path(resolve_data_dir(tune_dir)) / "text", multi=True)
        setting, tune_scores = choose_setting(graph, tune_lattices, tune_references, grid, tune_dir)
        chosen_on = tune_dir
        record = {"tune_dir": tune_dir, "chosen": list(setting), "grid": tune_scores.table()}
        (out / "grid.json").write_text(json.dumps(record, indent=2) + "\n")
    lattices = decode_lattices(graph, likelihoods_of(data_dir), search, num_workers=num_workers)
    directory = Path(resolve_data_dir(data_dir))
    text = directory / "text"
    references = read_kaldi_map(text, multi=True) if text.exists() else None
    utt2spk = read_kaldi_map(directory / "utt2spk") if (directory / "utt2spk").exists() else None
    hypotheses, wer, files = write_lattice_decoding(
        out, graph, lattices, setting, grid=grid, references=references, utt2spk=utt2spk, chosen_on=chosen_on
    )
    files += ["grid.json"] if tune_dir is not None else []
    settings = {"acoustic_scale": 1 / setting[0], "insertion_penalty": setting[1], "lm_weight": setting[0]}
    if wer is not None:
        wer.update(sources)
        (out / "wer.json").write_text(json.dumps(wer, indent=2) + "\n")
        files.append("wer.json")
    return DecodeReport(hypotheses, wer, settings, files)


def _write_decoding(out: Path, result: DecodingResult, likelihoods: dict[str, Any] | None) -> list[str]:
    """Writes ``hyp.txt``, ``ali.ark``/``scp``, ``failed.txt`` and, given likelihoods, ``loglikes.ark``/``scp``."""
    if likelihoods is not None:
        write_loglikelihoods(f"ark,scp:{out / 'loglikes.ark'},{out / 'loglikes.scp'}", likelihoods)
    write_text(out / "hyp.txt", result.text())
    write_alignments(
        f"ark,scp:{out / 'ali.ark'},{out / 'ali.scp'}", ((k, h.alignment) for k, h in result.hypotheses.items())
    )
    (out / "failed.txt").write_text("".join(f"{key}\n" for key in result.not_final))  # no final state reached
    log.info(
        "decoded %d utterances (%d frames) at %.0f frames/s (%.0fx real time), %d without a final state",
        len(result.hypotheses),
        result.num_frames,
        result.frames_per_second,
        1.0 / max(result.real_time_factor, 1e-12),
        len(result.not_final),
    )
    loglikes = ["loglikes.ark", "loglikes.scp"] if likelihoods is not None else []
    return ["hyp.txt", "ali.ark", "ali.scp", *loglikes, "failed.txt"]


def _score(out: Path, data_dir: str, result: DecodingResult, record: dict[str, Any]) -> dict[str, Any] | None:
    """``wer.json`` when the data directory has a transcript: the error counts and ``record`` (settings, sources)."""
    text_file = Path(resolve_data_dir(data_dir)) / "text"
    if not text_file.exists():
        return None
    scored = word_error_rate(read_kaldi_map(text_file, multi=True), result.text())
    wer = {**scored.to_dict(), **record, "failed_utterances": len(result.not_final)}
    (out / "wer.json").write_text(json.dumps(wer, indent=2) + "\n")
    log.debug("%s", scored)  # the command line prints it
    return wer
