"""Builds the embedded demo corpus (``lightning_rectifier/corpus/fsdd``) from the raw FSDD recordings, reproducibly.

    python recipes/fsdd/prepare.py --recordings ../shared/data/fsdd/recordings --out lightning_rectifier/corpus/fsdd
    python recipes/fsdd/prepare.py --recordings ../shared/data/fsdd/recordings --check   # rebuild, compare hashes

Steps: 13-dim Kaldi MFCC of every recording (dither off, so deterministic); pocketsphinx forced alignment to senone
states; the senones that occur become a compact inventory 0..N-1 (``senones.txt`` maps them back to pocketsphinx's
5,126); a connected-digit test set is made by concatenating test recordings of one speaker with short low-level noise
gaps, labelled by projecting the recordings' own alignments onto the new frames; the lexicon (each digit's senone
states) comes from the training alignments. Everything random is seeded, every table sorted: the output is
bit-for-bit the same on every run, which ``--check`` verifies against ``MANIFEST.sha256``.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile

from lightning_rectifier.data.kaldi_io import (
    read_alignments,
    read_features,
    write_alignments,
    write_features,
)
from lightning_rectifier.decode.lexicon import lexicon_from_alignments, read_ctm, write_lexicon
from lightning_rectifier.frontend.align import align_data_dir
from lightning_rectifier.frontend.features import FeatureConfig, compute_mfcc
from lightning_rectifier.frontend.prepare import prepare_data_dir

log = logging.getLogger("fsdd")

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEST_TAKES = range(5)  # the dataset's own split: takes 0-4 are the test set
HELD_OUT_SPEAKER = "theo"  # the speaker-independent split tests on one speaker never seen in training
SAMPLE_RATE = 8000
SEED = 20130616
CONFIG = FeatureConfig(
    kind="mfcc",
    sample_rate=SAMPLE_RATE,
    resample=False,
    options={"num_ceps": 13, "num_mel_bins": 23, "low_freq": 20.0, "high_freq": -200.0, "dither": 0.0},
)
FEATURES, ALIGNMENTS = "fsdd_mfcc.ark", "fsdd_ali.ark"


def utterance_id(speaker: str, digit: int, take: int) -> str:
    return f"{speaker}_{digit}_{take:02d}"


def make_tables(recordings: Path, work: Path) -> dict[str, tuple[str, int, int]]:
    """wav.scp, text, utt2spk for every recording; returns utterance -> (speaker, digit, take)."""
    info = {}
    for wav in sorted(recordings.glob("*.wav")):
        digit, speaker, take = wav.stem.split("_")
        info[utterance_id(speaker, int(digit), int(take))] = (speaker, int(digit), int(take), wav.resolve())
    keys = sorted(info)
    (work / "wav.scp").write_text("".join(f"{k} {info[k][3]}\n" for k in keys))
    (work / "text").write_text("".join(f"{k} {DIGITS[info[k][1]]}\n" for k in keys))
    (work / "utt2spk").write_text("".join(f"{k} {info[k][0]}\n" for k in keys))
    return {k: info[k][:3] for k in keys}


def connected_set(
    info: dict[str, tuple[str, int, int]], wavs: dict[str, Path], alignments: dict[str, np.ndarray], silence: list[int]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, str]]:
    """Concatenates 3-6 test recordings of one speaker per utterance; labels projected from their alignments."""
    rng = np.random.default_rng(SEED)
    features, labels, text = {}, {}, {}
    by_speaker: dict[str, list[str]] = defaultdict(list)
    for utt, (speaker, _, take) in info.items():
        if take in TEST_TAKES and utt in alignments:
            by_speaker[speaker].append(utt)
    for speaker in sorted(by_speaker):
        pool = list(by_speaker[speaker])
        rng.shuffle(pool)
        index = 0
        while len(pool) >= 3 and index < 10:
            size = int(rng.integers(3, 7))
            parts, pool = pool[:size], pool[size:]
            pieces: list[np.ndarray] = []
            spans: list[tuple[int, int, str | None]] = []  # (first sample, end sample, utterance or None for gap)
            position = 0
            for k, part in enumerate([None, *parts]):
                if k > 0:
                    audio, rate = soundfile.read(wavs[part], dtype="float32")
                    assert rate == SAMPLE_RATE
                    spans.append((position, position + len(audio), part))
                    pieces.append(audio)
                    position += len(audio)
                gap = int(rng.uniform(0.1, 0.3) * SAMPLE_RATE)
                spans.append((position, position + gap, None))
                pieces.append(rng.normal(0.0, 3e-4, gap).astype(np.float32))  # about -70 dBFS
                position += gap
            audio = np.concatenate(pieces)
            feats = compute_mfcc(audio, SAMPLE_RATE, **CONFIG.options)
            frame_labels = np.empty(len(feats), dtype=np.int32)
            for i in range(len(feats)):
                centre = 80 * i + 100  # 25 ms windows every 10 ms, snip_edges: frame i covers [80i, 80i + 200)
                first, end, part = next(s for s in spans if s[0] <= centre < s[1] or s is spans[-1])
                if part is None:  # a gap: silence states in order over the gap
                    third = min(2, 3 * (centre - first) // max(end - first, 1))
                    frame_labels[i] = silence[int(third)]
                else:
                    j = int(np.clip(round((centre - first - 100) / 80), 0, len(alignments[part]) - 1))
                    frame_labels[i] = alignments[part][j]
            key = f"{speaker}_connected_{index:02d}"
            features[key], labels[key] = feats, frame_labels
            text[key] = " ".join(DIGITS[info[p][1]] for p in parts)
            index += 1
    return features, labels, text


def write_split(
    out: Path,
    name: str,
    utts: list[str],
    speakers: dict[str, str],
    text: dict[str, str],
    feats_scp: dict[str, str],
    ali_scp: dict[str, str],
) -> None:
    directory = out / name
    directory.mkdir(parents=True)
    utts = sorted(utts)
    (directory / "feats.scp").write_text("".join(f"{u} {feats_scp[u]}\n" for u in utts))
    (directory / "ali.scp").write_text("".join(f"{u} {ali_scp[u]}\n" for u in utts if u in ali_scp))
    (directory / "utt2spk").write_text("".join(f"{u} {speakers[u]}\n" for u in utts))
    spk2utt: dict[str, list[str]] = defaultdict(list)
    for u in utts:
        spk2utt[speakers[u]].append(u)
    (directory / "spk2utt").write_text("".join(f"{s} {' '.join(v)}\n" for s, v in sorted(spk2utt.items())))
    (directory / "text").write_text("".join(f"{u} {text[u]}\n" for u in utts))


def relative_scp(path: Path, archive: str) -> dict[str, str]:
    """Rewrites an scp's absolute archive paths to the bare archive name (resolved next to the corpus)."""
    out = {}
    for line in path.read_text().splitlines():
        key, value = line.split(" ", 1)
        out[key] = f"{archive}:{value.rsplit(':', 1)[1]}"
    return out


def build(recordings: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        info = make_tables(recordings, work)
        wavs = {
            u: Path(line.split(" ", 1)[1])
            for u, line in ((ln.split(" ", 1)[0], ln) for ln in (work / "wav.scp").read_text().splitlines())
        }
        prepare_data_dir(
            work / "wav.scp", work / "data", text=work / "text", utt2spk=work / "utt2spk", config=CONFIG, progress=False
        )
        summary = align_data_dir(work / "data", work / "ali", config=CONFIG, progress=False)
        log.info("alignment: %s", summary)
        raw = dict(read_alignments(work / "ali" / "ali.scp"))
        words = read_ctm(work / "ali" / "words.ctm")
        sphinx_silence = [int(s) for s in (work / "ali" / "silence_pdfs").read_text().split()]
        connected_feats, connected_raw, connected_text = connected_set(info, wavs, raw, sphinx_silence)

        # compact senone inventory: every senone that occurs (silence included), in pocketsphinx order
        inventory = sorted(set(np.concatenate(list(raw.values())).tolist()) | set(sphinx_silence))
        compact = {s: i for i, s in enumerate(inventory)}

        def to_compact(labels: np.ndarray) -> np.ndarray:
            return np.array([compact[int(s)] for s in labels], dtype=np.int32)

        alignments = {u: to_compact(v) for u, v in {**raw, **connected_raw}.items()}
        features = {**dict(read_features(work / "data" / "feats.scp")), **connected_feats}
        text = {**{u: DIGITS[info[u][1]] for u in info}, **connected_text}
        speakers = {**{u: info[u][0] for u in info}, **{u: u.split("_")[0] for u in connected_feats}}

        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        write_features(f"ark,scp:{out / FEATURES},{work / 'feats.scp'}", sorted(features.items()), compression="auto")
        write_alignments(f"ark,scp:{out / ALIGNMENTS},{work / 'ali.scp'}", sorted(alignments.items()))
        feats_scp, ali_scp = relative_scp(work / "feats.scp", FEATURES), relative_scp(work / "ali.scp", ALIGNMENTS)

        isolated = sorted(info)
        splits = {
            "train": [u for u in isolated if info[u][2] not in TEST_TAKES],
            "test": [u for u in isolated if info[u][2] in TEST_TAKES],
            "train_speakers": [u for u in isolated if info[u][0] != HELD_OUT_SPEAKER],
            "test_speakers": [u for u in isolated if info[u][0] == HELD_OUT_SPEAKER],
            "test_connected": sorted(connected_feats),
        }
        for name, utts in splits.items():
            write_split(out, name, utts, speakers, text, feats_scp, ali_scp)

        lexicon, counts = lexicon_from_alignments(
            {u: alignments[u] for u in splits["train"] if u in alignments},
            {u: words[u] for u in splits["train"] if u in words},
        )
        write_lexicon(out / "lexicon.txt", {w: v for w, v in lexicon.items() if w in DIGITS})
        (out / "silence.txt").write_text(" ".join(str(compact[s]) for s in sphinx_silence) + "\n")
        (out / "senones.txt").write_text(
            "# compact id -> pocketsphinx en-us senone id (5,126 tied states; 96-98 are SIL)\n"
            + "".join(f"{i} {s}\n" for i, s in enumerate(inventory))
        )
        shutil.copytree(work / "data" / "conf", out / "conf")
        failed = sorted(set(info) - set(raw))
        (out / "alignment_failures.txt").write_text("".join(f"{u}\n" for u in failed))
        log.info(
            "%d utterances, %d connected, %d senones, %d alignment failures, lexicon: %s",
            len(info),
            len(connected_feats),
            len(inventory),
            len(failed),
            {w: len(v) for w, v in sorted(lexicon.items()) if w in DIGITS},
        )
        del counts
        write_manifest(out)


def write_manifest(out: Path) -> None:
    lines = []
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name not in ("MANIFEST.sha256",)):
        if path.suffix == ".md":
            continue
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.relative_to(out)}\n")
    (out / "MANIFEST.sha256").write_text("".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recordings", type=Path, required=True, help="FSDD recordings/ folder")
    parser.add_argument("--out", type=Path, default=Path("lightning_rectifier/corpus/fsdd"))
    parser.add_argument("--check", action="store_true", help="rebuild in a temporary folder and compare")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.check:
        keep = {p.name: p.read_bytes() for p in args.out.glob("*.md")} if args.out.exists() else {}
        build(args.recordings, args.out)
        for name, data in keep.items():
            (args.out / name).write_bytes(data)
        log.info("wrote %s (%d files)", args.out, sum(1 for p in args.out.rglob("*") if p.is_file()))
        return
    with tempfile.TemporaryDirectory() as tmp:
        build(args.recordings, Path(tmp) / "fsdd")
        fresh = (Path(tmp) / "fsdd" / "MANIFEST.sha256").read_text()
        shipped = (args.out / "MANIFEST.sha256").read_text()
        if fresh != shipped:
            raise SystemExit(
                "the rebuilt corpus differs from the shipped one:\n"
                + "".join(
                    f"  {a.split()[1]}\n"
                    for a, b in zip(fresh.splitlines(), shipped.splitlines(), strict=False)
                    if a != b
                )
            )
        log.info("rebuilt corpus is identical to %s (%d files)", args.out, len(shipped.splitlines()))


if __name__ == "__main__":
    main()
