import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_rectifier import nn as lr_nn
from lightning_rectifier.nn import (
    NONLINEARITIES,
    DNNAcousticModel,
    get_nonlinearity,
    nonlinearity_gain,
    register_nonlinearity,
)

# functional references, written independently of the registry
REFERENCE = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": F.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "prelu": lambda x: F.prelu(x, torch.tensor([0.01])),
    "elu": F.elu,
    "gelu": F.gelu,
    "silu": F.silu,
}
# expected He / Glorot gains, by hand
GAIN = {
    "tanh": 5 / 3,
    "sigmoid": 1.0,
    "relu": math.sqrt(2),
    "leaky_relu": math.sqrt(2 / (1 + 0.01**2)),
    "prelu": math.sqrt(2 / (1 + 0.01**2)),
    "elu": math.sqrt(2),
    "gelu": math.sqrt(2),
    "silu": math.sqrt(2),
}
SATURATING = {"tanh", "sigmoid"}


@pytest.fixture
def registry(monkeypatch):
    """Give each test its own copy of the registry, so registrations do not leak."""
    monkeypatch.setattr(lr_nn, "_REGISTRY", dict(lr_nn._REGISTRY))


def test_builtin_names_are_all_covered():
    assert set(NONLINEARITIES) == set(REFERENCE) == set(GAIN)
    assert NONLINEARITIES == ("relu", "leaky_relu", "prelu", "elu", "gelu", "silu", "tanh", "sigmoid")


def test_one_vocabulary_for_the_network_and_the_metrics():
    from lightning_rectifier.metrics import functional
    from lightning_rectifier.metrics.hidden import ACTIVATION_TYPES

    assert functional.NONLINEARITIES is NONLINEARITIES and functional.Nonlinearity is lr_nn.Nonlinearity
    assert set(ACTIVATION_TYPES.values()) == set(NONLINEARITIES)  # every name has an activation rule and a module


@pytest.mark.parametrize("name", NONLINEARITIES)
def test_registry_matches_functional_reference(name):
    x = torch.randn(64, 32)
    torch.testing.assert_close(get_nonlinearity(name)(x), REFERENCE[name](x), rtol=0, atol=0)


def test_nonlinearity_options():
    x = torch.randn(16, 8)
    torch.testing.assert_close(get_nonlinearity("leaky_relu", negative_slope=0.2)(x), F.leaky_relu(x, 0.2))
    prelu = get_nonlinearity("prelu", negative_slope=0.3, num_features=8)
    assert prelu.weight.shape == (8,)
    torch.testing.assert_close(prelu(x), F.prelu(x, torch.full((8,), 0.3)))
    torch.testing.assert_close(get_nonlinearity("elu", alpha=0.5)(x), F.elu(x, alpha=0.5))
    torch.testing.assert_close(get_nonlinearity("gelu", approximate="tanh")(x), F.gelu(x, approximate="tanh"))
    with pytest.raises(TypeError):
        get_nonlinearity("tanh", negative_slope=0.1)


@pytest.mark.parametrize("name", NONLINEARITIES)
def test_gains(name):
    assert nonlinearity_gain(name) == pytest.approx(GAIN[name])
    assert nonlinearity_gain("leaky_relu", negative_slope=0.2) == pytest.approx(math.sqrt(2 / 1.04))


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="unknown nonlinearity 'swish'") as info:
        get_nonlinearity("swish")
    for name in NONLINEARITIES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="expected one of"):
        DNNAcousticModel(4, 3, hidden_dim=8, num_layers=1, nonlinearity="Relu")


def test_register_user_nonlinearity(registry):
    register_nonlinearity("abs", lambda: nn.Identity(), init="xavier")
    assert nonlinearity_gain("abs") == 1.0
    with pytest.raises(ValueError, match="already registered"):
        register_nonlinearity("abs", nn.Tanh)
    register_nonlinearity("abs", nn.Tanh, overwrite=True)
    assert isinstance(get_nonlinearity("abs"), nn.Tanh)

    # a user factory receives the model's options only if it names them
    seen = {}

    def capped(negative_slope: float = 0.0, num_features: int = 1) -> nn.Module:
        seen.update(negative_slope=negative_slope, num_features=num_features)
        return nn.Hardtanh(-negative_slope, 1.0)

    register_nonlinearity("capped", capped, gain=lambda negative_slope=0.0, **_: 1.0 + negative_slope)
    model = DNNAcousticModel(5, 3, hidden_dim=6, num_layers=2, nonlinearity="capped", negative_slope=0.25)
    assert seen == {"negative_slope": 0.25, "num_features": 6}
    with pytest.raises(ValueError, match="capped"):
        get_nonlinearity("nope")
    assert model(torch.randn(2, 5)).shape == (2, 3)

    for bad in [
        {"name": "", "factory": nn.ReLU},
        {"name": "x", "factory": 3},
        {"name": "x", "factory": nn.ReLU, "init": "he"},
    ]:
        with pytest.raises(ValueError, match="expected"):
            register_nonlinearity(**bad)


@pytest.mark.parametrize("name", NONLINEARITIES)
def test_shapes(name):
    model = DNNAcousticModel(input_dim=20, num_senones=7, hidden_dim=16, num_layers=3, nonlinearity=name)
    logits = model(torch.randn(5, 20))
    assert isinstance(logits, torch.Tensor)
    assert logits.shape == (5, 7)
    logits, hidden = model(torch.randn(2, 4, 20), return_hidden=True)
    assert logits.shape == (2, 4, 7)
    assert [h.shape for h in hidden] == [(2, 4, 16)] * 3
    assert model.num_layers == len(model.hidden) == len(model.hidden_layers) == 3
    assert model.hidden_layers is model.hidden
    assert model.hidden_dim == 16
    assert model.nonlinearity == name


@pytest.mark.parametrize("name", ["tanh", "leaky_relu", "prelu", "gelu"])
def test_hidden_equals_manual_recomputation(name):
    torch.manual_seed(0)
    model = DNNAcousticModel(input_dim=12, num_senones=5, hidden_dim=10, num_layers=4, nonlinearity=name)
    x = torch.randn(8, 12)
    logits, hidden = model(x, return_hidden=True)
    assert len(hidden) == 4

    h, expected = x, []
    for block in model.hidden:
        pre = F.linear(h, block.linear.weight, block.linear.bias)
        h = F.prelu(pre, block.act.weight) if name == "prelu" else REFERENCE[name](pre)
        expected.append(h)
    for got, want in zip(hidden, expected, strict=True):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(logits, F.linear(h, model.output.weight, model.output.bias))
    torch.testing.assert_close(model(x), logits)

    # forward hooks on the hidden blocks see the same tensors
    captured = []
    handles = [block.register_forward_hook(lambda m, i, o: captured.append(o)) for block in model.hidden]
    _, hidden = model(x, return_hidden=True)
    for handle in handles:
        handle.remove()
    assert all(a is b for a, b in zip(captured, hidden, strict=True))


def test_hidden_is_taken_before_dropout():
    torch.manual_seed(0)
    model = DNNAcousticModel(input_dim=6, num_senones=3, hidden_dim=256, num_layers=2, nonlinearity="tanh", dropout=0.5)
    x = torch.randn(4, 6)
    model.train()
    logits, hidden = model(x, return_hidden=True)
    block = model.hidden[0]
    torch.testing.assert_close(hidden[0], torch.tanh(block.linear(x)))
    assert (hidden[0] != 0).all()
    model.eval()
    assert not torch.allclose(logits, model(x))
    assert isinstance(DNNAcousticModel(6, 3, hidden_dim=4, num_layers=1).drop, nn.Identity)


@pytest.mark.parametrize("name", NONLINEARITIES)
def test_auto_init_statistics(name):
    torch.manual_seed(0)
    fan_in, width, senones = 440, 2048, 300
    model = DNNAcousticModel(fan_in, senones, hidden_dim=width, num_layers=2, nonlinearity=name)
    gain = GAIN[name]
    first, square = model.hidden[0].linear.weight, model.hidden[1].linear.weight
    if name in SATURATING:  # Glorot uniform: std = gain * sqrt(2 / (fan_in + fan_out)), bounded by sqrt(3) std
        want_first, want_square = gain * math.sqrt(2 / (fan_in + width)), gain * math.sqrt(2 / (2 * width))
        assert square.abs().max() <= math.sqrt(3) * want_square
    else:  # He normal: std = gain / sqrt(fan_in), unbounded tails
        want_first, want_square = gain / math.sqrt(fan_in), gain / math.sqrt(width)
        assert square.abs().max() > 4 * want_square
    assert first.std().item() == pytest.approx(want_first, rel=0.02)
    assert square.std().item() == pytest.approx(want_square, rel=0.02)
    assert abs(square.mean().item()) < 0.01 * want_square
    out = model.output.weight
    assert out.std().item() == pytest.approx(math.sqrt(2 / (width + senones)), rel=0.02)
    for layer in [*(block.linear for block in model.hidden), model.output]:
        assert (layer.bias == 0).all()
    if name == "prelu":
        assert all((block.act.weight == 0.01).all() for block in model.hidden)


def test_forced_init_schemes_keep_the_nonlinearity_gain():
    torch.manual_seed(0)
    kaiming_tanh = DNNAcousticModel(256, 3, hidden_dim=1024, num_layers=1, nonlinearity="tanh", init="kaiming")
    assert kaiming_tanh.hidden[0].linear.weight.std().item() == pytest.approx(5 / 3 / 16, rel=0.02)
    xavier_relu = DNNAcousticModel(256, 3, hidden_dim=1024, num_layers=1, nonlinearity="relu", init="xavier")
    want = math.sqrt(2) * math.sqrt(2 / (256 + 1024))
    assert xavier_relu.hidden[0].linear.weight.std().item() == pytest.approx(want, rel=0.02)

    # "torch" keeps nn.Linear's defaults: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases
    default = DNNAcousticModel(256, 3, hidden_dim=1024, num_layers=1, nonlinearity="relu", init="torch")
    layer = default.hidden[0].linear
    assert layer.weight.abs().max() <= 1 / 16
    assert layer.weight.std().item() == pytest.approx(1 / 16 / math.sqrt(3), rel=0.02)
    assert (layer.bias != 0).any()
    assert (default.output.bias != 0).any()


def test_reset_parameters_restores_init():
    model = DNNAcousticModel(8, 4, hidden_dim=16, num_layers=2, nonlinearity="prelu", negative_slope=0.1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    model.reset_parameters()
    assert all((block.act.weight == 0.1).all() for block in model.hidden)
    assert all((block.linear.bias == 0).all() for block in model.hidden)


@pytest.mark.parametrize(("name", "layers"), [("relu", 1), ("tanh", 4), ("prelu", 3)])
def test_parameter_count_closed_form(name, layers):
    d, s, h = 440, 3000, 64
    model = DNNAcousticModel(d, s, hidden_dim=h, num_layers=layers, nonlinearity=name)
    want = (d + 1) * h + (layers - 1) * (h + 1) * h + (h + 1) * s
    if name == "prelu":  # one learnable slope per hidden unit
        want += layers * h
    assert model.num_parameters == want == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_dim": 0}, "input_dim"),
        ({"input_dim": 4.0}, "input_dim"),
        ({"num_senones": 0}, "num_senones"),
        ({"hidden_dim": -1}, "hidden_dim"),
        ({"num_layers": 0}, "num_layers"),
        ({"num_layers": True}, "num_layers"),
        ({"nonlinearity": "swish"}, "unknown nonlinearity"),
        ({"negative_slope": -0.1}, "negative_slope"),
        ({"negative_slope": 1.0}, "negative_slope"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": -0.1}, "dropout"),
        ({"init": "he"}, "init"),
    ],
)
def test_invalid_arguments(kwargs, match):
    args = {"input_dim": 4, "num_senones": 3, "hidden_dim": 8, "num_layers": 2, **kwargs}
    with pytest.raises(ValueError, match=match) as info:
        DNNAcousticModel(**args)
    assert "expected" in str(info.value)
    assert "got" in str(info.value) or "unknown" in str(info.value)


@pytest.mark.parametrize("name", ["relu", "tanh", "prelu"])
def test_bf16_autocast(name):
    model = DNNAcousticModel(12, 5, hidden_dim=8, num_layers=2, nonlinearity=name)
    x = torch.randn(4, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, hidden = model(x, return_hidden=True)
    assert logits.dtype == torch.bfloat16
    assert all(h.dtype == torch.bfloat16 for h in hidden)
    assert torch.isfinite(logits.float()).all()
    torch.testing.assert_close(logits.float(), model(x), rtol=0.05, atol=0.05)
    F.cross_entropy(logits.float(), torch.tensor([0, 1, 2, 3])).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_gradients_flow_to_every_parameter():
    model = DNNAcousticModel(6, 4, hidden_dim=8, num_layers=3, nonlinearity="prelu")
    F.cross_entropy(model(torch.randn(10, 6)), torch.randint(0, 4, (10,))).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
