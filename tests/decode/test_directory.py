"""Decoding a trained model: the demo corpus's isolated and connected digits, graphs from files, Kaldi export."""

from __future__ import annotations

import json
from pathlib import Path

import kaldi_native_io
import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_rectifier.cli import main
from lightning_rectifier.data.datamodule import AlignedFramesDataModule
from lightning_rectifier.decode.acoustic_model import AcousticModel, compute_loglikelihoods
from lightning_rectifier.decode.directory import decode_directory, demo_graph
from lightning_rectifier.module import SenoneClassifier

pytest.importorskip("kaldi_decoder")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A small ReLU network trained for one epoch (about 420 steps, seconds) on the embedded corpus's training split."""
    root = tmp_path_factory.mktemp("demo")
    L.seed_everything(0)
    dm = AlignedFramesDataModule(valid_fraction=0.05, valid_split="utterance", delta_order=2, batch_size=256)
    model = SenoneClassifier(dm.feat_dim, dm.num_senones, hidden_dim=128, num_layers=2, learning_rate=0.02)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[ModelCheckpoint(dirpath=root / "run" / "checkpoints", save_last=True, save_top_k=0)],
        default_root_dir=root,
    )
    trainer.fit(model, datamodule=dm)
    return root / "run" / "checkpoints" / "last.ckpt"


def test_isolated_digits_decode_far_below_chance(checkpoint: Path, tmp_path: Path) -> None:
    report = decode_directory(str(checkpoint), "fsdd:test", str(tmp_path), grammar="word")
    wer = json.loads((tmp_path / "wer.json").read_text())
    assert wer["num_words"] == 300 and wer["insertions"] == 0 and wer["deletions"] == 0
    assert wer["wer"] < 0.15  # chance: 0.9
    hyp = dict(line.split(" ", 1) for line in (tmp_path / "hyp.txt").read_text().splitlines())
    assert len(hyp) == 300 and report.hypotheses["george_0_00"] == hyp["george_0_00"].strip()
    alignments = dict(kaldi_native_io.SequentialInt32VectorReader(f"scp:{tmp_path / 'ali.scp'}"))
    model = AcousticModel.load(checkpoint)
    loglikes, _ = compute_loglikelihoods(model, "fsdd:test")
    assert {k: len(v) for k, v in alignments.items()} == {k: len(v) for k, v in loglikes.items()}


def test_connected_digits_have_insertions_and_deletions_to_measure(checkpoint: Path, tmp_path: Path) -> None:
    decode_directory(str(checkpoint), "fsdd:test_connected", str(tmp_path), grammar="loop")
    wer = json.loads((tmp_path / "wer.json").read_text())
    assert wer["num_words"] == 268
    assert wer["wer"] < 0.3  # a digit loop would score ~1.0 by chance
    # with a huge insertion penalty words get deleted: WER goes up and deletions appear
    penalised = decode_directory(str(checkpoint), "fsdd:test_connected", str(tmp_path / "p"), insertion_penalty=50.0)
    assert penalised.wer is not None and penalised.wer["deletions"] > wer["deletions"]


def test_likelihoods_are_posteriors_over_priors_and_export_for_kaldi(checkpoint: Path, tmp_path: Path) -> None:
    model = AcousticModel.load(checkpoint)
    likelihoods, posteriors = compute_loglikelihoods(model, "fsdd:test_connected")
    priors = model.data_state["priors"].numpy()
    key = next(iter(likelihoods))
    np.testing.assert_allclose(
        likelihoods[key], posteriors[key] - np.log(priors).astype(np.float32), rtol=1e-5, atol=1e-4
    )
    np.testing.assert_allclose(np.exp(posteriors[key]).sum(1), 1.0, rtol=1e-5)
    decode_directory(str(checkpoint), "fsdd:test_connected", str(tmp_path), write_loglikes=True)
    reader = kaldi_native_io.SequentialFloatMatrixReader(f"scp:{tmp_path / 'loglikes.scp'}")
    exported = {key: np.array(matrix) for key, matrix in reader}  # the reader reuses its buffer: copy
    assert sorted(exported) == sorted(likelihoods)
    np.testing.assert_allclose(exported[key], likelihoods[key], rtol=1e-6)


def test_a_graph_file_decodes_like_the_built_in_grammar(checkpoint: Path, tmp_path: Path) -> None:
    model = AcousticModel.load(checkpoint)
    demo_graph(model.num_senones, "loop").write(tmp_path / "G.fst", tmp_path / "words.txt")
    built_in = decode_directory(str(checkpoint), "fsdd:test_connected", str(tmp_path / "a"))
    from_file = decode_directory(
        str(checkpoint),
        "fsdd:test_connected",
        str(tmp_path / "b"),
        graph=str(tmp_path / "G.fst"),
        words=str(tmp_path / "words.txt"),
    )
    assert from_file.hypotheses == built_in.hypotheses
    # the insertion penalty applies to a graph from a file too: a prohibitive one deletes words
    penalised = decode_directory(
        str(checkpoint), "fsdd:test_connected", str(tmp_path / "c"), graph=str(tmp_path / "G.fst"),
        words=str(tmp_path / "words.txt"), insertion_penalty=50.0,
    )  # fmt: skip
    assert penalised.wer is not None and built_in.wer is not None
    assert penalised.wer["deletions"] > built_in.wer["deletions"]


def test_decode_command_and_tuning(checkpoint: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "decode",
                "--ckpt_path",
                str(checkpoint),
                "--data_dir",
                "fsdd:test_connected",
                "--out_dir",
                str(tmp_path),
                "--tune_dir",
                "fsdd:test_speakers",
                "--grammar",
                "loop",
            ]
        )
    assert exit_.value.code == 0
    assert "WER" in capsys.readouterr().out
    # the development set was decoded once to lattices and scored at every LM weight x penalty (Kaldi's grid)
    grid = json.loads((tmp_path / "grid.json").read_text())
    assert grid["tune_dir"] == "fsdd:test_speakers" and len(grid["grid"]) == 11 * 3
    wer = json.loads((tmp_path / "wer.json").read_text())
    assert [wer["lm_weight"], wer["insertion_penalty"]] == grid["chosen"] and wer["chosen_on"] == "fsdd:test_speakers"
    assert wer["acoustic_scale"] == pytest.approx(1 / wer["lm_weight"]) and 7 <= wer["lm_weight"] <= 17
    # the test set: its own lattices, score.sh's layout, and the dev-chosen setting applied (not its own best)
    assert (tmp_path / "lat.1.gz").exists() and (tmp_path / "wer_7_0.0").exists()
    assert (tmp_path / "scoring_kaldi" / "best_wer").read_text().startswith("%WER")
    assert "(chosen on fsdd:test_speakers)" in (tmp_path / "scoring_kaldi" / "chosen").read_text()
    assert wer["best_on_this_set"]["wer"] <= wer["wer"]


def test_decoding_without_a_graph_needs_a_demo_model(tmp_path: Path, ami_data_dir: Path) -> None:
    model = SenoneClassifier(13 * 11, 5, hidden_dim=4, num_layers=1)
    dm = AlignedFramesDataModule(train_dir=str(ami_data_dir), num_senones=5, valid_fraction=0)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "datamodule_hyper_parameters": dict(dm.hparams),
            "pytorch-lightning_version": L.__version__,
        },
        tmp_path / "model.ckpt",
    )
    with pytest.raises(ValueError, match="no decoding graph given"):
        decode_directory(str(tmp_path / "model.ckpt"), str(ami_data_dir), str(tmp_path / "out"))


def test_test_with_a_decoding_callback_logs_wer(checkpoint: Path, tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    from lightning_rectifier.callbacks import DecodeTestSet

    model = AcousticModel.load(checkpoint)
    dm = model.datamodule("fsdd:test", test_dir="fsdd:test")
    callback = DecodeTestSet(grammar="word")
    trainer = L.Trainer(
        accelerator="cpu", logger=CSVLogger(tmp_path), callbacks=[callback], enable_progress_bar=False,
        enable_model_summary=False,
    )  # fmt: skip
    metrics = trainer.test(model.model, datamodule=dm, verbose=False)[0]
    assert metrics["test/wer"] == pytest.approx(callback.last["test/wer"]) and callback.last["test/wer"] < 0.15
    assert metrics["test/num_words"] == dm.stores["test"].num_utterances  # one digit per utterance
    wer = json.loads(next(tmp_path.rglob("decode/wer.json")).read_text())
    assert wer["num_words"] == int(metrics["test/num_words"]) and wer["data_dir"] == "fsdd:test"
    # decode over the same utterances agrees
    report = decode_directory(str(checkpoint), "fsdd:test", str(tmp_path / "cli"), grammar="word")
    assert report.wer is not None
    errors = round(callback.last["test/wer"] * callback.last["test/num_words"])
    assert errors <= report.wer["substitutions"] + report.wer["deletions"] + report.wer["insertions"]


def test_decode_test_set_without_a_graph_needs_a_demo_model(ami_data_dir: Path) -> None:
    from lightning_rectifier.callbacks import DecodeTestSet

    class Fake:
        datamodule = AlignedFramesDataModule(train_dir=str(ami_data_dir))

    with pytest.raises(ValueError, match="no decoding graph given"):
        DecodeTestSet()._decoding_graph(Fake(), 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="acoustic_scale"):
        DecodeTestSet(acoustic_scale=0)
