"""The activation rule (activation_bounds, is_active): the paper's thresholds, strict comparisons made in float32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_rectifier.metrics.functional import NONLINEARITIES, activation_bounds, is_active


@pytest.mark.parametrize(
    ("nonlinearity", "saturation", "bounds"),
    [
        ("relu", "neg", (0.0, None)),
        ("leaky_relu", "neg", (0.0, None)),
        ("prelu", "neg", (0.0, None)),
        ("elu", "neg", (0.0, None)),
        ("gelu", "neg", (0.0, None)),
        ("relu", "both", (0.0, None)),  # no upper asymptote: saturation does not apply
        ("tanh", "neg", (-0.95, None)),
        ("tanh", "both", (-0.95, 0.95)),
        ("sigmoid", "neg", (0.025, None)),
        ("sigmoid", "both", (0.025, 0.975)),
    ],
)
def test_paper_bounds(nonlinearity: str, saturation: str, bounds: tuple) -> None:
    assert activation_bounds(nonlinearity, saturation) == bounds  # type: ignore[arg-type]


def test_custom_threshold() -> None:
    assert activation_bounds("tanh", "both", threshold=0.9) == (-0.9, 0.9)
    assert activation_bounds("sigmoid", "both", threshold=0.9) == pytest.approx((0.05, 0.95))
    assert activation_bounds("relu", threshold=0.5) == (0.0, None)


def test_comparisons_are_strict() -> None:
    tanh_edges = torch.tensor([-1.0, -0.95, -0.9499, 0.0, 0.9499, 0.95, 1.0])
    assert is_active(tanh_edges, "tanh", "neg").tolist() == [False, False, True, True, True, True, True]
    assert is_active(tanh_edges, "tanh", "both").tolist() == [False, False, True, True, True, False, False]
    relu_edges = torch.tensor([-0.0, 0.0, 1e-30, -1e-30])
    for name in ("relu", "leaky_relu", "prelu", "elu", "gelu", "silu"):
        assert is_active(relu_edges, name).tolist() == [False, False, True, False]  # type: ignore[arg-type]


def test_comparisons_are_made_in_float32() -> None:
    # a float64 value just above -0.95 rounds to float32(-0.95): saturated, as it is for a float32 model
    h64 = torch.tensor([np.nextafter(-0.95, 0.0), -0.95], dtype=torch.float64)
    assert h64[0].item() > -0.95
    assert is_active(h64, "tanh").tolist() == [False, False]
    # bf16 has no -0.95: its neighbours fall on either side of the threshold, and -0.95 rounds to the upper one
    h16 = torch.tensor([-0.953125, -0.94921875, -0.95], dtype=torch.bfloat16)
    assert h16.float().tolist() == [-0.953125, -0.94921875, -0.94921875]
    assert is_active(h16, "tanh").tolist() == [False, True, True]


def test_sigmoid_rule_is_tanh_rule_through_the_identity() -> None:
    # sigmoid(x) = (tanh(x / 2) + 1) / 2, so both rules agree away from float rounding at the thresholds
    x = torch.from_numpy(np.random.default_rng(0).normal(scale=6.0, size=20_000).astype(np.float32))
    t = torch.tanh(x / 2)
    s = torch.sigmoid(x)
    clear = ((t.abs() - 0.95).abs() > 1e-4).numpy()
    for saturation in ("neg", "both"):
        tanh_active = is_active(t, "tanh", saturation).numpy()  # type: ignore[arg-type]
        sigmoid_active = is_active(s, "sigmoid", saturation).numpy()  # type: ignore[arg-type]
        np.testing.assert_array_equal(tanh_active[clear], sigmoid_active[clear])
        assert 0.1 < tanh_active.mean() < 0.9


def test_is_active_keeps_shape_and_ignores_grad() -> None:
    h = torch.randn(2, 3, 4, requires_grad=True)
    active = is_active(h, "tanh", "both")
    assert active.shape == (2, 3, 4)
    assert active.dtype == torch.bool


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("swish", "neg", 0.95), "Expected nonlinearity to be one of relu, leaky_relu, prelu, elu, gelu, silu, tanh"),
        (("tanh", "upper", 0.95), "Expected saturation to be one of neg, both; got 'upper'"),
        (("tanh", "neg", 0.0), r"Expected threshold in \(0, 1\], got 0.0"),
        (("tanh", "neg", 1.01), r"Expected threshold in \(0, 1\]"),
        (("relu", "neg", "0.95"), r"Expected threshold in \(0, 1\]"),
    ],
)
def test_bad_choices_raise_with_the_choices(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        activation_bounds(*args)


def test_nonlinearities_listed() -> None:
    assert NONLINEARITIES == ("relu", "leaky_relu", "prelu", "elu", "gelu", "silu", "tanh", "sigmoid")
