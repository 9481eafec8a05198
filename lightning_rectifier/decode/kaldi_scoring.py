"""Scoring lattices as Kaldi's ``steps/score_kaldi.sh`` does, and its output layout.

Every LM weight (``--min-lmwt 7 --max-lmwt 17``) x word insertion penalty (``0.0,0.5,1.0``) is scored from the same
lattices; the decode folder then holds ``wer_<LMWT>_<WIP>`` (``compute-wer`` lines), ``scoring_kaldi/test_filt.txt``,
``scoring_kaldi/penalty_<WIP>/<LMWT>.txt`` (hypotheses), ``scoring_kaldi/best_wer`` and
``scoring_kaldi/wer_details/{lmwt,wip,per_utt,per_spk}`` for the best setting. Kaldi's ``best_wer`` is the best on
the scored set itself, an optimistic figure; :func:`write_kaldi_scoring` says so in ``best_wer`` and records, when a
setting was chosen on another set, which one (``chosen``), as the paper's protocol (tune on dev, report test) needs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lightning_rectifier.decode.lattice import Lattice
from lightning_rectifier.decode.scoring import WerResult, word_error_rate, write_text

__all__ = ["LatticeScores", "parse_penalties", "score_lattices", "setting_name", "write_kaldi_scoring"]

Setting = tuple[float, float]  # (LM weight, word insertion penalty)


def parse_penalties(text: str) -> list[float]:
    """Kaldi's ``--word-ins-penalty`` list: ``"0.0,0.5,1.0"`` -> ``[0.0, 0.5, 1.0]``.

    Example:
        >>> parse_penalties("0.0, 0.5,1")
        [0.0, 0.5, 1.0]
    """
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated numbers such as 0.0,0.5,1.0, got {text!r}") from None
    if not values:
        raise ValueError(f"expected at least one insertion penalty, got {text!r}")
    return values


def setting_name(lm_weight: float, penalty: float) -> str:
    """The ``<LMWT>_<WIP>`` of Kaldi's file names: ``10_0.5``, ``7_0.0``.

    Example:
        >>> setting_name(10, 0.5), setting_name(7.0, 0), setting_name(2.5, 0.25)
        ('10_0.5', '7_0.0', '2.5_0.25')
    """
    weight = str(int(lm_weight)) if float(lm_weight).is_integer() else f"{lm_weight:g}"
    wip = f"{penalty:.1f}" if round(penalty, 1) == penalty else f"{penalty:g}"
    return f"{weight}_{wip}"


@dataclass
class LatticeScores:
    """Hypotheses and WER at every setting of the grid.

    Attributes:
        hypotheses: ``(LM weight, penalty)`` -> utterance -> words.
        results: ``(LM weight, penalty)`` -> corpus WER (when references were given).
    """

    hypotheses: dict[Setting, dict[str, str]] = field(default_factory=dict)
    results: dict[Setting, WerResult] = field(default_factory=dict)

    def best(self) -> Setting:
        """The setting with the lowest WER (ties: the smaller penalty, then the smaller LM weight)."""
        if not self.results:
            raise ValueError("no WER to choose from: the lattices were scored without references")
        return min(self.results, key=lambda s: (self.results[s].wer, s[1], s[0]))

    def at_edge(self, setting: Setting) -> bool:
        """Whether the setting's LM weight is the smallest or largest of the grid (the grid may be too narrow)."""
        weights = sorted({s[0] for s in self.hypotheses})
        return len(weights) > 1 and setting[0] in (weights[0], weights[-1])

    def table(self) -> list[dict[str, float]]:
        """One JSON-ready row per setting."""
        return [{"lm_weight": w, "insertion_penalty": p, **self.results[w, p].to_dict()} for w, p in self.results]


def score_lattices(
    lattices: Mapping[str, Lattice | None],
    words: Sequence[str],
    references: Mapping[str, str] | None,
    lm_weights: Iterable[float] = range(7, 18),
    penalties: Iterable[float] = (0.0, 0.5, 1.0),
) -> LatticeScores:
    """Best paths of every lattice at every ``(LM weight, penalty)`` and, given references, their WER.

    An utterance without a lattice (no final state reached) has an empty hypothesis at every setting.
    """
    weights, scores = list(lm_weights), LatticeScores()
    for penalty in penalties:
        per_weight: list[dict[str, str]] = [{} for _ in weights]
        for key, lattice in lattices.items():
            paths = lattice.best_paths(weights, penalty) if lattice is not None else [[] for _ in weights]
            for hyps, path in zip(per_weight, paths, strict=True):
                hyps[key] = " ".join(words[label] for label in path)
        for weight, hyps in zip(weights, per_weight, strict=True):
            scores.hypotheses[weight, penalty] = hyps
            if references is not None:
                scores.results[weight, penalty] = word_error_rate(references, hyps)
    return scores


def write_kaldi_scoring(
    out_dir: str | os.PathLike[str],
    scores: LatticeScores,
    references: Mapping[str, str],
    *,
    utt2spk: Mapping[str, str] | None = None,
    chosen: Setting | None = None,
    chosen_on: str | None = None,
) -> list[str]:
    """Writes ``score_kaldi.sh``'s files for ``scores`` into ``out_dir``; returns their paths (relative).

    Args:
        out_dir: The decode folder.
        scores: What :func:`score_lattices` gave, with references.
        references: Utterance -> reference words (``scoring_kaldi/test_filt.txt``).
        utt2spk: Utterance -> speaker, for ``per_spk`` (default: each utterance its own speaker).
        chosen: The setting chosen on another set (written to ``scoring_kaldi/chosen``).
        chosen_on: That set, for the record.
    """
    out = Path(out_dir)
    scoring = out / "scoring_kaldi"
    (scoring / "wer_details").mkdir(parents=True, exist_ok=True)
    write_text(scoring / "test_filt.txt", references)
    files = ["scoring_kaldi/test_filt.txt"]
    for (weight, penalty), hyps in scores.hypotheses.items():
        name = setting_name(weight, penalty)
        penalty_dir = scoring / f"penalty_{name.split('_')[1]}"
        penalty_dir.mkdir(exist_ok=True)
        write_text(penalty_dir / f"{name.split('_')[0]}.txt", hyps)
        result = scores.results[weight, penalty]
        (out / f"wer_{name}").write_text(_compute_wer_lines(result))
        files += [f"wer_{name}", str((penalty_dir / f"{name.split('_')[0]}.txt").relative_to(out))]
    best = scores.best()
    best_line = str(scores.results[best]).splitlines()[0]
    (scoring / "best_wer").write_text(
        f"{best_line} {out / ('wer_' + setting_name(*best))}\n"
        "# the best setting on this set itself (Kaldi's best_wer): optimistic; choose the setting on a"
        " development set\n"
    )
    (scoring / "wer_details" / "lmwt").write_text(setting_name(*best).split("_")[0] + "\n")
    (scoring / "wer_details" / "wip").write_text(setting_name(*best).split("_")[1] + "\n")
    per_utt, per_spk = _details(references, scores.hypotheses[best], utt2spk)
    (scoring / "wer_details" / "per_utt").write_text(per_utt)
    (scoring / "wer_details" / "per_spk").write_text(per_spk)
    files += [
        "scoring_kaldi/best_wer",
        *(f"scoring_kaldi/wer_details/{n}" for n in ("lmwt", "wip", "per_utt", "per_spk")),
    ]
    if chosen is not None:
        line = str(scores.results[chosen]).splitlines()[0] if chosen in scores.results else "(not in this grid)"
        (scoring / "chosen").write_text(f"{line} {out / ('wer_' + setting_name(*chosen))} (chosen on {chosen_on})\n")
        files.append("scoring_kaldi/chosen")
    return files


def _compute_wer_lines(result: WerResult) -> str:
    """What ``compute-wer --text --mode=present`` prints."""
    return f"{result}\nScored {result.num_sentences} sentences, {len(result.missing)} not present in hyp.\n"


def _details(
    references: Mapping[str, str], hypotheses: Mapping[str, str], utt2spk: Mapping[str, str] | None
) -> tuple[str, str]:
    """``per_utt`` (as ``align-text`` + ``wer_per_utt_details.pl``) and ``per_spk`` for one setting."""
    lines: list[str] = []
    per_speaker: dict[str, list[int]] = {}  # sentences, words, corr, sub, ins, del, sentence errors
    for key, ref_text in references.items():
        ref, hyp = ref_text.split(), hypotheses.get(key, "").split()
        utterance_lines, counts = _aligned(key, ref, hyp)
        lines += utterance_lines
        totals = per_speaker.setdefault((utt2spk or {}).get(key, key), [0] * 7)
        for i, value in enumerate([1, len(ref), *counts, int(any(counts[1:]))]):
            totals[i] += value
    return "\n".join(lines) + "\n", _per_speaker_table(per_speaker)


def _aligned(key: str, ref: list[str], hyp: list[str]) -> tuple[list[str], list[int]]:
    """The ``ref``, ``hyp``, ``op`` and ``#csid`` lines of one utterance, and its C, S, I, D counts."""
    import jiwer

    ops: list[tuple[str, str, str]] = []
    if ref:
        for chunk in jiwer.process_words(" ".join(ref), " ".join(hyp)).alignments[0]:
            r, h = ref[chunk.ref_start_idx : chunk.ref_end_idx], hyp[chunk.hyp_start_idx : chunk.hyp_end_idx]
            code = {"equal": "C", "substitute": "S", "delete": "D", "insert": "I"}[chunk.type]
            ops += [
                (r[i] if i < len(r) else "***", h[i] if i < len(h) else "***", code) for i in range(max(len(r), len(h)))
            ]
    else:
        ops = [("***", word, "I") for word in hyp]
    counts = [sum(op == code for _, _, op in ops) for code in "CSID"]
    widths = [max(len(r), len(h), 1) for r, h, _ in ops]
    lines = []
    for label, column in (("ref", 0), ("hyp", 1), ("op", 2)):
        cells = "  ".join(f"{op[column]:<{w}}" for op, w in zip(ops, widths, strict=True))
        lines.append(f"{key} {label:<4} {cells}".rstrip())
    return [*lines, f"{key} #csid {' '.join(map(str, counts))}"], counts


def _per_speaker_table(per_speaker: dict[str, list[int]]) -> str:
    """``wer_per_spk_details.pl``'s table: a ``raw`` (counts) and a ``sys`` (percent) row per speaker, then SUM."""
    names = ("#SENT", "#WORD", "Corr", "Sub", "Ins", "Del", "Err", "S.Err")
    rows = [f"{'SPEAKER':<15} {'id':>6} " + " ".join(f"{name:>10}" for name in names)]
    summed = [sum(column) for column in zip(*per_speaker.values(), strict=True)] if per_speaker else [0] * 7
    for speaker, (sents, words, corr, sub, ins, dele, serr) in [*sorted(per_speaker.items()), ("SUM", summed)]:
        raw = (sents, words, corr, sub, ins, dele, sub + ins + dele, serr)
        rows.append(f"{speaker:<15} {'raw':>6} " + " ".join(f"{v:>10}" for v in raw))
        pct = [100 * v / max(words, 1) for v in raw[2:7]] + [100 * serr / max(sents, 1)]
        rows.append(f"{speaker:<15} {'sys':>6} {sents:>10} {words:>10} " + " ".join(f"{v:>10.2f}" for v in pct))
    return "\n".join(rows) + "\n"
