"""The paper's qualitative claims, checked on real speech (the embedded FSDD corpus) with briefly trained networks."""

from __future__ import annotations

import lightning as L
import pytest

from lightning_rectifier import DispersionMonitor
from lightning_rectifier.data.datamodule import AlignedFramesDataModule
from lightning_rectifier.module import SenoneClassifier


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, dict[str, float]]:
    """tanh, ReL and leaky-ReL networks (2 x 128) after one epoch each; their last validation metrics."""
    dm = AlignedFramesDataModule(valid_fraction=0.1, valid_split="utterance", delta_order=2, batch_size=256)
    results = {}
    for nonlinearity in ("tanh", "relu", "leaky_relu"):
        L.seed_everything(0)
        model = SenoneClassifier(
            dm.feat_dim, dm.num_senones, hidden_dim=128, num_layers=2, nonlinearity=nonlinearity, learning_rate=0.02
        )
        monitor = DispersionMonitor(plot=False)
        trainer = L.Trainer(
            accelerator="cpu",
            max_epochs=1,
            logger=False,
            enable_checkpointing=False,
            default_root_dir=tmp_path_factory.mktemp(nonlinearity),  # the monitor writes its curves there
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[monitor],
        )
        trainer.fit(model, datamodule=dm)
        results[nonlinearity] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return results


def test_rectifier_networks_are_sparser_than_tanh_networks(trained) -> None:
    # "ReL and leaky ReL hidden units are active on fewer inputs": activation probability h > 0 for rectifiers,
    # h > -0.95 (not saturated at the off asymptote, the paper's tanh "neg") for tanh; the last hidden layer
    # layer, over the monitor's first 10,000 validation frames (as the paper measured)
    key = "dispersion/layer_2/mean_activation_probability"
    assert trained["relu"][key] < trained["tanh"][key]
    assert trained["leaky_relu"][key] < trained["tanh"][key]


def test_all_three_networks_learned(trained) -> None:
    for nonlinearity, metrics in trained.items():
        assert metrics["val/frame_accuracy"] > 0.3, nonlinearity  # 97 senones: chance is about 0.1 (silence)
