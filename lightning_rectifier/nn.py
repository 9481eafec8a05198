"""The DNN acoustic model and the registry of hidden nonlinearities (plain torch, no Lightning).

A hybrid DNN-HMM acoustic model maps a window of spliced feature frames to senone logits. The paper compares tanh,
ReL and leaky ReL hidden units; the registry below holds those and a few relatives, each with the weight
initialisation that suits it, and lets users add their own.
"""

from __future__ import annotations

import inspect
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

import torch
import torch.nn.functional as F
from torch import nn

Nonlinearity = Literal["relu", "leaky_relu", "prelu", "elu", "gelu", "silu", "tanh", "sigmoid"]
"""The built-in hidden nonlinearities: the one vocabulary of the package (the network, the metrics' activation rules,
the callbacks and the command line all take these names)."""
NONLINEARITIES: tuple[str, ...] = get_args(Nonlinearity)
InitScheme = Literal["kaiming", "xavier"]


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., nn.Module]
    init: InitScheme
    gain: float | Callable[..., float]


_REGISTRY: dict[str, _Entry] = {}


def register_nonlinearity(
    name: str,
    factory: Callable[..., nn.Module],
    init: InitScheme = "kaiming",
    gain: float | Callable[..., float] | None = None,
    overwrite: bool = False,
) -> None:
    """Add a hidden nonlinearity that :func:`get_nonlinearity` and :class:`DNNAcousticModel` can use by name.

    Args:
        name: The name to register.
        factory: Called with keyword options to build one activation module. :class:`DNNAcousticModel` passes
            ``negative_slope`` and ``num_features`` (the layer width) to a factory whose signature names them.
        init: The weight scheme ``init="auto"`` picks for this nonlinearity: ``"kaiming"`` (He et al. 2015, for
            rectifier-like units) or ``"xavier"`` (Glorot & Bengio 2010, for saturating units).
        gain: The weight gain for this nonlinearity, or a function of the factory's keyword options returning it.
            Default: ``sqrt(2)`` for ``"kaiming"``, 1 for ``"xavier"``.
        overwrite: Replace an existing entry of the same name instead of raising.

    Example:
        >>> register_nonlinearity("softplus", torch.nn.Softplus, overwrite=True)
        >>> get_nonlinearity("softplus", beta=2.0)
        Softplus(beta=2.0, threshold=20.0)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"expected a non-empty string as the nonlinearity name, got {name!r}")
    if not callable(factory):
        raise ValueError(f"expected a callable factory for nonlinearity {name!r}, got {factory!r}")
    if init not in get_args(InitScheme):
        raise ValueError(f"expected init to be one of {get_args(InitScheme)}, got {init!r}")
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"nonlinearity {name!r} is already registered; pass overwrite=True to replace it")
    if gain is None:
        gain = math.sqrt(2.0) if init == "kaiming" else 1.0
    _REGISTRY[name] = _Entry(factory, init, gain)


def _entry(name: str) -> _Entry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown nonlinearity {name!r}; expected one of: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def get_nonlinearity(name: str, **options: Any) -> nn.Module:
    """Build the activation module registered as ``name``, passing ``options`` to its factory.

    Args:
        name: One of :data:`NONLINEARITIES` or a name added with :func:`register_nonlinearity`.
        **options: Keyword options of the factory, e.g. ``negative_slope`` for ``leaky_relu`` and ``prelu``.

    Example:
        >>> get_nonlinearity("leaky_relu")
        LeakyReLU(negative_slope=0.01)
        >>> get_nonlinearity("prelu", num_features=4).weight.shape
        torch.Size([4])
    """
    return _entry(name).factory(**options)


def nonlinearity_gain(name: str, **options: Any) -> float:
    """The weight-initialisation gain of nonlinearity ``name`` built with ``options``.

    Example:
        >>> round(nonlinearity_gain("tanh"), 4), round(nonlinearity_gain("relu"), 4)
        (1.6667, 1.4142)
    """
    gain = _entry(name).gain
    return float(gain(**options) if callable(gain) else gain)


class FeaturePReLU(nn.PReLU):
    """:class:`torch.nn.PReLU` whose slopes run along the last (feature) dimension, for ``(..., features)`` input.

    ``nn.PReLU`` with several slopes takes dimension 1 as the channel, which is wrong for ``(batch, time, features)``.

    Example:
        >>> act = FeaturePReLU(num_parameters=3, init=0.5)
        >>> act(-torch.ones(2, 4, 3)).shape, act(-torch.ones(3)).tolist()
        (torch.Size([2, 4, 3]), [-0.5, -0.5, -0.5])
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Apply the unit's slope to the negative part of each feature."""
        if self.num_parameters == 1:
            return super().forward(input)
        return F.prelu(input.reshape(-1, self.num_parameters), self.weight).reshape(input.shape)


def _prelu(negative_slope: float = 0.01, num_features: int = 1) -> nn.PReLU:
    # the learnable slope starts at the paper's leaky slope; one slope per unit when num_features is the layer width
    return FeaturePReLU(num_parameters=num_features, init=negative_slope)


def _leaky_gain(negative_slope: float = 0.01, **_: Any) -> float:
    return nn.init.calculate_gain("leaky_relu", negative_slope)


register_nonlinearity("tanh", nn.Tanh, init="xavier", gain=5.0 / 3.0)
register_nonlinearity("sigmoid", nn.Sigmoid, init="xavier", gain=1.0)
register_nonlinearity("relu", nn.ReLU, init="kaiming")
register_nonlinearity("leaky_relu", nn.LeakyReLU, init="kaiming", gain=_leaky_gain)
register_nonlinearity("prelu", _prelu, init="kaiming", gain=_leaky_gain)
register_nonlinearity("elu", nn.ELU, init="kaiming")
register_nonlinearity("gelu", nn.GELU, init="kaiming")
register_nonlinearity("silu", nn.SiLU, init="kaiming")


def _init_linear(layer: nn.Linear, scheme: Literal["kaiming", "xavier", "torch"], gain: float) -> None:
    if scheme == "torch":
        layer.reset_parameters()
        return
    if scheme == "kaiming":
        nn.init.normal_(layer.weight, std=gain / math.sqrt(layer.in_features))
    else:
        nn.init.xavier_uniform_(layer.weight, gain=gain)
    nn.init.zeros_(layer.bias)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"expected {name} to be an integer >= {minimum}, got {value!r}")


class DNNAcousticModel(nn.Module):
    """Feed-forward senone classifier: ``num_layers`` hidden affine layers, each followed by the nonlinearity.

    Input is a batch of spliced feature frames ``(..., input_dim)``; output is senone logits ``(..., num_senones)``
    (no softmax: train with cross-entropy on the logits). Hidden block ``i`` is ``model.hidden[i]``, a
    ``Sequential(linear, act)``, so a forward hook on it sees the post-nonlinearity activations; dropout, when used, is
    applied after the block and is not part of what it returns.

    Initialisation (``init``), biases always zero:

    - ``"auto"``: the scheme registered for the nonlinearity. Rectifier-like units (relu, leaky_relu, prelu, elu,
      gelu) get He/Kaiming: weights ``N(0, gain² / fan_in)``. A ReL zeroes about half of its input, halving the
      activation variance at each layer; gain ``sqrt(2 / (1 + a²))`` (slope ``a``: 0 for ReL, ``negative_slope`` for
      leaky and the initial slope of PReLU; ``sqrt(2)`` for ELU and GELU) undoes that, so deep rectifier stacks keep a
      unit activation scale. Saturating units (tanh, sigmoid) get Glorot/Xavier uniform,
      ``U(±gain·sqrt(6 / (fan_in + fan_out)))``, which balances forward and backward variance; gain 5/3 for tanh makes
      up for tanh shrinking a unit-variance input (to a mean square of about 0.39), gain 1 for sigmoid is Glorot's
      original.
    - ``"kaiming"`` / ``"xavier"``: that scheme for every hidden layer, still with the nonlinearity's gain.
    - ``"torch"``: PyTorch's ``nn.Linear`` defaults (uniform with bound ``1/sqrt(fan_in)``, weights and biases).

    Except under ``"torch"`` the output layer is Xavier uniform with gain 1: it feeds a softmax, not a nonlinearity.

    ``prelu`` layers learn one slope per hidden unit (``hidden_dim`` slopes per layer), starting at
    ``negative_slope``; ``get_nonlinearity("prelu")`` alone gives one shared slope.

    Args:
        input_dim: Size of one spliced input vector (feature dimension times context frames).
        num_senones: Number of output classes (senones, i.e. pdf-ids).
        hidden_dim: Units per hidden layer (the paper: 2048).
        num_layers: Number of hidden layers (the paper: 2, 3 and 4).
        nonlinearity: Hidden nonlinearity: one of :data:`NONLINEARITIES` or a name added with
            :func:`register_nonlinearity`.
        negative_slope: Slope for negative inputs of ``leaky_relu`` (the paper: 0.01) and initial slope of ``prelu``;
            ignored by nonlinearities that do not take it.
        dropout: Dropout probability after each hidden layer (the paper uses none).
        init: Weight initialisation, see above.

    Example:
        >>> model = DNNAcousticModel(input_dim=440, num_senones=3000, hidden_dim=64, num_layers=2)
        >>> logits, hidden = model(torch.randn(8, 440), return_hidden=True)
        >>> logits.shape, len(hidden), hidden[0].shape
        (torch.Size([8, 3000]), 2, torch.Size([8, 64]))
        >>> model.num_parameters
        227384
    """

    def __init__(
        self,
        input_dim: int,
        num_senones: int,
        hidden_dim: int = 2048,
        num_layers: int = 4,
        nonlinearity: str = "relu",
        negative_slope: float = 0.01,
        dropout: float = 0.0,
        init: Literal["auto", "kaiming", "xavier", "torch"] = "auto",
    ) -> None:
        super().__init__()
        _check_int("input_dim", input_dim, 1)
        _check_int("num_senones", num_senones, 1)
        _check_int("hidden_dim", hidden_dim, 1)
        _check_int("num_layers", num_layers, 1)
        entry = _entry(nonlinearity)
        if not 0.0 <= negative_slope < 1.0:
            raise ValueError(f"expected negative_slope in [0, 1), got {negative_slope!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"expected dropout in [0, 1), got {dropout!r}")
        if init not in ("auto", "kaiming", "xavier", "torch"):
            raise ValueError(f"expected init to be one of ('auto', 'kaiming', 'xavier', 'torch'), got {init!r}")
        self.input_dim, self.num_senones = input_dim, num_senones
        self.hidden_dim, self.num_layers = hidden_dim, num_layers
        self.nonlinearity, self.negative_slope = nonlinearity, negative_slope
        self.dropout, self.init = dropout, init

        # pass the options a factory asks for, so user factories need not accept ones they do not use
        params = inspect.signature(entry.factory).parameters
        offered = {"negative_slope": negative_slope, "num_features": hidden_dim}
        self._options = {key: value for key, value in offered.items() if key in params}
        self.hidden = nn.ModuleList(
            nn.Sequential(
                OrderedDict(
                    linear=nn.Linear(input_dim if i == 0 else hidden_dim, hidden_dim),
                    act=entry.factory(**self._options),
                )
            )
            for i in range(num_layers)
        )
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.output = nn.Linear(hidden_dim, num_senones)
        self.reset_parameters()

    @property
    def hidden_layers(self) -> nn.ModuleList:
        """The hidden blocks ``Sequential(linear, act)``, in order (same object as ``self.hidden``)."""
        return self.hidden

    @property
    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def reset_parameters(self) -> None:
        """(Re)initialise all weights as ``init`` says (see the class docstring)."""
        scheme = _entry(self.nonlinearity).init if self.init == "auto" else self.init
        gain = nonlinearity_gain(self.nonlinearity, **self._options)
        for block in self.hidden:
            _init_linear(cast(nn.Linear, block.linear), scheme, gain)
            reset = getattr(block.act, "reset_parameters", None)
            if callable(reset):
                reset()  # e.g. PReLU back to its initial slope
        _init_linear(self.output, "torch" if self.init == "torch" else "xavier", 1.0)

    def forward(
        self, x: torch.Tensor, return_hidden: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Senone logits for a batch of spliced frames.

        Args:
            x: Input of shape ``(..., input_dim)``.
            return_hidden: Also return each hidden layer's post-nonlinearity output (before dropout), from this same
                pass; no copies are made, the list holds the tensors the pass computed.

        Returns:
            ``logits`` of shape ``(..., num_senones)``, or ``(logits, hidden)`` with ``num_layers`` tensors of shape
            ``(..., hidden_dim)`` when ``return_hidden`` is true.
        """
        hidden: list[torch.Tensor] = []
        for block in self.hidden:
            x = block(x)
            if return_hidden:
                hidden.append(x)
            x = self.drop(x)
        logits = self.output(x)
        return (logits, hidden) if return_hidden else logits
