"""ActivationProbability, ActivationSparsity, Dispersion: class (batched) == functional == numpy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_rectifier.metrics import ActivationProbability, ActivationSparsity, Dispersion
from lightning_rectifier.metrics.functional import activation_probability, activation_sparsity, dispersion

NUM_UNITS = 6
BATCH_SIZES = (7, 0, 20, 1, 12)  # includes an empty batch


# ---------------------------------------------------------------------------------------------------------------------
# numpy reference, written from the paper's rule (Figure 2) without the package


def np_active(h: np.ndarray, nonlinearity: str, saturation: str, threshold: float = 0.95) -> np.ndarray:
    h = h.astype(np.float32)
    if nonlinearity in ("relu", "leaky_relu", "prelu", "elu", "gelu", "silu"):
        return h > 0
    if nonlinearity == "tanh":
        off, on = np.float32(-threshold), np.float32(threshold)
    else:  # sigmoid(x) = (tanh(x / 2) + 1) / 2
        off, on = np.float32((1 - threshold) / 2), np.float32((1 + threshold) / 2)
    return (h > off) & (h < on) if saturation == "both" else h > off


def np_stats(h: np.ndarray, nonlinearity: str, saturation: str, threshold: float = 0.95) -> dict[str, np.ndarray]:
    frames = h.reshape(-1, h.shape[-1])
    active = np_active(frames, nonlinearity, saturation, threshold)
    probs = active.mean(axis=0)
    return {
        "probs": probs,
        "dispersion": probs.std(ddof=0),
        "mean_activation_probability": active.mean(),
        "zero_fraction": np.mean(frames == 0),
        "dead_units": np.sum(~active.any(axis=0)),
        "always_on_units": np.sum(active.all(axis=0)),
    }


# ---------------------------------------------------------------------------------------------------------------------
# data


def make_frames(nonlinearity: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Frames that hit the rule's edges: exact zeros, values on and next to +-0.95 (tanh) or 0.025/0.975 (sigmoid)."""
    x = rng.normal(scale=2.0, size=(n, NUM_UNITS)).astype(np.float32)
    x[:, 0] -= 4.0  # a unit that is mostly off
    if nonlinearity == "relu":
        return np.maximum(x, 0)
    if nonlinearity == "leaky_relu":
        return np.where(x > 0, x, np.float32(0.01) * x)
    if nonlinearity == "tanh":
        h, edges = np.tanh(x), np.float32([-0.95, 0.95, -1.0, 1.0, 0.0])
    else:
        h, edges = 1 / (1 + np.exp(-x)), np.float32([0.025, 0.975, 0.0, 1.0, 0.5])
    edges = np.concatenate([edges, np.nextafter(edges, np.float32(2)), np.nextafter(edges, np.float32(-2))])
    pick = rng.random(h.shape) < 0.3
    h[pick] = rng.choice(edges, size=int(pick.sum()))
    return h.astype(np.float32)


CASES = [
    ("relu", "neg"),
    ("leaky_relu", "neg"),
    ("tanh", "neg"),
    ("tanh", "both"),
    ("sigmoid", "neg"),
    ("sigmoid", "both"),
]


def batches_for(nonlinearity: str, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    return [torch.from_numpy(make_frames(nonlinearity, n, rng)).to(dtype) for n in BATCH_SIZES]


def reference(batches: list[torch.Tensor], nonlinearity: str, saturation: str) -> dict[str, np.ndarray]:
    return np_stats(torch.cat(batches).float().numpy(), nonlinearity, saturation)  # bf16 -> float32 is exact


# ---------------------------------------------------------------------------------------------------------------------
# class == functional == numpy


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("nonlinearity", "saturation"), CASES)
def test_activation_probability_matches_reference(nonlinearity: str, saturation: str, dtype: torch.dtype) -> None:
    batches = batches_for(nonlinearity, dtype)
    metric = ActivationProbability(NUM_UNITS, nonlinearity, saturation)  # type: ignore[arg-type]
    for h in batches:
        metric.update(h)
    expected = reference(batches, nonlinearity, saturation)["probs"]
    assert metric.frames.item() == sum(BATCH_SIZES)
    np.testing.assert_allclose(metric.compute().numpy(), expected, atol=1e-7)
    functional = activation_probability(torch.cat(batches), nonlinearity, saturation)  # type: ignore[arg-type]
    np.testing.assert_allclose(functional.numpy(), expected, atol=1e-7)
    assert len(set(expected.tolist())) > 2  # not a degenerate layer


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("nonlinearity", "saturation"), CASES)
def test_dispersion_matches_reference(nonlinearity: str, saturation: str, dtype: torch.dtype) -> None:
    batches = batches_for(nonlinearity, dtype, seed=1)
    metric = Dispersion(NUM_UNITS, nonlinearity, saturation)  # type: ignore[arg-type]
    for h in batches:
        metric.update(h)
    expected = reference(batches, nonlinearity, saturation)
    for stats in (metric.compute(), dispersion(torch.cat(batches), nonlinearity, saturation)):  # type: ignore[arg-type]
        assert stats["dispersion"].item() == pytest.approx(expected["dispersion"], abs=1e-6)
        assert stats["mean_activation_probability"].item() == pytest.approx(
            expected["mean_activation_probability"], abs=1e-6
        )
        assert stats["dead_units"].item() == expected["dead_units"]
        assert stats["always_on_units"].item() == expected["always_on_units"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("nonlinearity", "saturation"), CASES)
def test_activation_sparsity_matches_reference(nonlinearity: str, saturation: str, dtype: torch.dtype) -> None:
    batches = batches_for(nonlinearity, dtype, seed=2)
    metric = ActivationSparsity(nonlinearity, saturation)  # type: ignore[arg-type]
    for h in batches:
        metric.update(h)
    expected = reference(batches, nonlinearity, saturation)
    for stats in (metric.compute(), activation_sparsity(torch.cat(batches), nonlinearity, saturation)):  # type: ignore[arg-type]
        assert stats["mean_activation_probability"].item() == pytest.approx(
            expected["mean_activation_probability"], abs=1e-6
        )
        assert stats["zero_fraction"].item() == pytest.approx(expected["zero_fraction"], abs=1e-6)
    # the mean activation probability is the mean of the per-unit probabilities
    assert expected["mean_activation_probability"] == pytest.approx(expected["probs"].mean())
    if nonlinearity == "relu":
        assert 0.3 < expected["zero_fraction"] < 0.9


def test_custom_threshold_and_leading_dims() -> None:
    rng = np.random.default_rng(3)
    h = np.tanh(rng.normal(scale=2.0, size=(4, 5, NUM_UNITS))).astype(np.float32)  # (batch, time, units)
    metric = ActivationProbability(NUM_UNITS, "tanh", "both", threshold=0.8)
    metric.update(torch.from_numpy(h[:1]))
    metric.update(torch.from_numpy(h[1:]))
    expected = np_active(h.reshape(-1, NUM_UNITS), "tanh", "both", 0.8).mean(axis=0)
    np.testing.assert_allclose(metric.compute().numpy(), expected, atol=1e-7)
    assert not np.allclose(expected, np_active(h.reshape(-1, NUM_UNITS), "tanh", "both").mean(axis=0))


# ---------------------------------------------------------------------------------------------------------------------
# worked by hand

# 4 frames x 3 units of tanh outputs
TANH_H = torch.tensor(
    [
        [-0.99, 0.2, 0.96],
        [-0.97, -0.5, 0.3],
        [-1.0, 0.94, 0.99],
        [-0.96, 0.0, -0.2],
    ]
)


def test_tanh_hand_example_both() -> None:
    # -0.95 < h < 0.95: unit 0 never (all below -0.95), unit 1 always, unit 2 on frames 2 and 4
    metric = Dispersion(3, "tanh", "both")
    metric.update(TANH_H[:1])
    metric.update(TANH_H[1:])
    stats = metric.compute()
    assert activation_probability(TANH_H, "tanh", "both").tolist() == [0.0, 1.0, 0.5]
    assert stats["mean_activation_probability"].item() == pytest.approx(0.5)
    assert stats["dispersion"].item() == pytest.approx(math.sqrt(1 / 6))  # sqrt(((0-.5)^2 + (1-.5)^2 + 0) / 3)
    assert (stats["dead_units"].item(), stats["always_on_units"].item()) == (1, 1)


def test_tanh_hand_example_neg() -> None:
    # h > -0.95: unit 0 never, units 1 and 2 always -> probabilities 0, 1, 1
    stats = dispersion(TANH_H, "tanh", "neg")
    assert stats["mean_activation_probability"].item() == pytest.approx(2 / 3)
    assert stats["dispersion"].item() == pytest.approx(math.sqrt(2) / 3)  # sqrt(((2/3)^2 + 2 (1/3)^2) / 3)
    assert (stats["dead_units"].item(), stats["always_on_units"].item()) == (1, 2)
    sparsity = activation_sparsity(TANH_H, "tanh", "neg")
    assert sparsity["zero_fraction"].item() == pytest.approx(1 / 12)  # the single 0.0
    assert sparsity["mean_activation_probability"].item() == pytest.approx(8 / 12)


def test_rectifier_hand_example() -> None:
    h = torch.tensor([[0.0, 1.0, 0.5], [0.0, 0.0, 2.0], [0.0, 0.3, 0.1], [0.0, 0.0, 0.7]])
    assert activation_probability(h, "relu").tolist() == [0.0, 0.5, 1.0]
    # leaky ReL: negative outputs are off but not zero
    leaky = torch.tensor([[-0.01, 1.0, 0.5], [-0.02, -0.03, 2.0], [0.0, 0.3, 0.1], [-0.05, 0.0, 0.7]])
    stats = activation_sparsity(leaky, "leaky_relu")
    assert stats["mean_activation_probability"].item() == pytest.approx(6 / 12)
    assert stats["zero_fraction"].item() == pytest.approx(2 / 12)


def test_sigmoid_hand_example() -> None:
    h = torch.tensor([[0.02], [0.025], [0.03], [0.97], [0.975], [0.98]])
    assert activation_probability(h, "sigmoid", "neg").item() == pytest.approx(4 / 6)
    assert activation_probability(h, "sigmoid", "both").item() == pytest.approx(2 / 6)


# ---------------------------------------------------------------------------------------------------------------------
# edges and errors


def test_no_frames_gives_nan_and_zero_counts() -> None:
    dispersion_metric = Dispersion(3)
    probability_metric = ActivationProbability(3)
    sparsity_metric = ActivationSparsity()
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert torch.isnan(probability_metric.compute()).all()
    for metric in (dispersion_metric, probability_metric, sparsity_metric):
        metric.update(torch.zeros(0, 3))
    assert torch.isnan(probability_metric.compute()).all()
    stats = dispersion_metric.compute()
    assert math.isnan(stats["dispersion"].item())
    assert math.isnan(stats["mean_activation_probability"].item())
    assert (stats["dead_units"].item(), stats["always_on_units"].item()) == (0, 0)
    assert all(math.isnan(v.item()) for v in sparsity_metric.compute().values())
    # an empty batch does not change what was counted
    dispersion_metric.update(torch.tensor([[0.0, 1.0, 2.0]]))
    dispersion_metric.update(torch.zeros(0, 3))
    stats = dispersion_metric.compute()
    assert (stats["dead_units"].item(), stats["always_on_units"].item()) == (1, 2)


def test_reset_clears_counts() -> None:
    metric = ActivationProbability(2)
    metric.update(torch.tensor([[1.0, 0.0]]))
    metric.reset()
    metric.update(torch.tensor([[0.0, 1.0]]))
    assert metric.compute().tolist() == [0.0, 1.0]


def test_wrong_unit_count_says_expected_and_got() -> None:
    metric = Dispersion(4)
    with pytest.raises(ValueError, match=r"4 units .* got shape \(2, 3\)"):
        metric.update(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="scalar"):
        metric.update(torch.tensor(1.0))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nonlinearity": "softplus"}, "relu, leaky_relu, prelu, elu, gelu, silu, tanh, sigmoid"),
        ({"saturation": "pos"}, "neg, both"),
        ({"threshold": 1.5}, r"\(0, 1\]"),
        ({"threshold": 0.0}, r"\(0, 1\]"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    for make in (lambda: ActivationProbability(3, **kwargs), lambda: Dispersion(3, **kwargs)):
        with pytest.raises(ValueError, match=match):
            make()
    with pytest.raises(ValueError, match=match):
        ActivationSparsity(**kwargs)
    with pytest.raises(ValueError, match=match):
        activation_probability(torch.zeros(1, 3), **kwargs)


@pytest.mark.parametrize("num_units", [0, -1, 2.0, True])
def test_bad_num_units_raises(num_units: object) -> None:
    with pytest.raises(ValueError, match="positive int"):
        ActivationProbability(num_units)  # type: ignore[arg-type]
