"""Finding the hidden layers of any network, and per-layer hidden-unit metrics fed by forward hooks.

The paper's analysis (activation probability, sparsity, dispersion) needs each hidden layer's post-nonlinearity
outputs and the rule that says when a unit is active. :func:`find_hidden_layers` finds both in any ``nn.Module``:

- by default, the activation modules (``nn.ReLU``, ``LeakyReLU``, ``PReLU``, ``ELU``, ``GELU``, ``SiLU``, ``Tanh``,
  ``Sigmoid``, ... see :data:`ACTIVATION_TYPES`) in the order they are registered (for ``nn.Sequential`` models the
  forward order; :class:`~lightning_rectifier.callbacks.DispersionMonitor` re-orders them by the order they fire),
  each with the rule of its type; an activation that is the network's last module (an output nonlinearity) and
  activations inside loss modules are left out;
- or the modules named by ``layers`` (module paths or glob patterns such as ``"encoder.*.act"``), with the rule
  taken from each module's type or given by ``nonlinearity`` (one name, or one per layer). A network that applies
  ``F.relu`` in its ``forward`` names the layers that feed it with ``pre_activation=True``: the nonlinearity is then
  applied to their outputs before counting.

:class:`HiddenUnitMetrics` puts a :class:`~lightning_rectifier.metrics.Dispersion` metric on every such layer in
one line of a user's ``LightningModule``; it counts the frames of forward passes made in evaluation mode.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from lightning_rectifier.metrics.functional import NONLINEARITIES, Nonlinearity, Saturation

ACTIVATION_TYPES: dict[type[nn.Module], Nonlinearity] = {
    nn.ReLU: "relu",
    nn.ReLU6: "relu",
    nn.LeakyReLU: "leaky_relu",
    nn.RReLU: "leaky_relu",
    nn.PReLU: "prelu",
    nn.ELU: "elu",
    nn.CELU: "elu",
    nn.SELU: "elu",
    nn.GELU: "gelu",
    nn.SiLU: "silu",
    nn.Mish: "silu",
    nn.Hardswish: "silu",
    nn.Tanh: "tanh",
    nn.Hardtanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.Hardsigmoid: "sigmoid",
}
"""Activation module types and the activation rule each follows (subclasses included)."""

_FUNCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu,
    "leaky_relu": torch.relu,  # same sign as leaky ReL for any slope > 0: only the sign matters to the rule
    "elu": torch.relu,
    "gelu": torch.nn.functional.gelu,
    "silu": torch.nn.functional.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
}


@dataclass(frozen=True)
class HiddenLayer:
    """One hidden layer as the metrics see it.

    Attributes:
        name: The module's path in the network (``"net.1"``), used in logged keys.
        module: The module whose forward output is counted.
        nonlinearity: The activation rule (see :func:`~lightning_rectifier.metrics.functional.activation_bounds`).
        pre_activation: The module's output is the input of the nonlinearity, which is applied before counting.
        negative_slope: The leaky slope of a ``LeakyReLU`` module (for the record; the rule depends on the sign only).
    """

    name: str
    module: nn.Module
    nonlinearity: Nonlinearity
    pre_activation: bool = False
    negative_slope: float | None = None

    def activations(self, output: Tensor) -> Tensor:
        """The post-nonlinearity activations from this module's forward output."""
        return _FUNCTIONS[self.nonlinearity](output) if self.pre_activation else output


def activation_rule(module: nn.Module) -> Nonlinearity | None:
    """The activation rule of an activation module's type, or None for any other module.

    Example:
        >>> activation_rule(nn.LeakyReLU(0.2)), activation_rule(nn.Tanh()), activation_rule(nn.Linear(2, 2))
        ('leaky_relu', 'tanh', None)
    """
    for kind, rule in ACTIVATION_TYPES.items():
        if isinstance(module, kind):
            return rule
    return None


def _is_excluded_container(module: nn.Module) -> bool:
    from torchmetrics import Metric

    return isinstance(module, (nn.modules.loss._Loss, Metric))


def _discover(network: nn.Module) -> list[tuple[str, nn.Module]]:
    excluded: list[str] = []
    found: list[tuple[str, nn.Module]] = []
    last_leaf: str | None = None
    for name, module in network.named_modules():
        if any(name == prefix or name.startswith(prefix + ".") for prefix in excluded):
            continue
        if _is_excluded_container(module):
            excluded.append(name)
            continue
        if not list(module.children()) and not isinstance(module, (nn.Dropout, nn.Identity)):
            last_leaf = name
        if activation_rule(module) is not None:
            found.append((name, module))
    # an activation that is the network's last computing module makes its output (e.g. a final Sigmoid)
    return [(name, module) for name, module in found if name != last_leaf]


def _match(network: nn.Module, patterns: Sequence[str]) -> list[tuple[str, nn.Module]]:
    modules = dict(network.named_modules())
    chosen: list[tuple[str, nn.Module]] = []
    for pattern in patterns:
        names = [pattern] if pattern in modules else [n for n in modules if n and fnmatch.fnmatchcase(n, pattern)]
        if not names:
            raise ValueError(
                f"layers names {pattern!r}, which matches no submodule of {type(network).__name__}"
                f" (its submodules: {', '.join(n for n in modules if n)[:300]})"
            )
        chosen.extend((name, modules[name]) for name in names if name not in {c[0] for c in chosen})
    return chosen


def find_hidden_layers(
    network: nn.Module,
    layers: Sequence[str] | None = None,
    nonlinearity: str | Sequence[str] | None = None,
    pre_activation: bool = False,
    default_nonlinearity: str | None = None,
) -> list[HiddenLayer]:
    """The hidden layers of a network and the activation rule of each.

    Args:
        network: Any module (a ``LightningModule`` included).
        layers: Module paths or glob patterns (``fnmatch``: ``"encoder.*.act"``) of the modules whose outputs are the
            hidden activations; default: every activation module (see the module docstring).
        nonlinearity: The rule: one name for all layers, or one per layer; default: from each module's type.
        pre_activation: The named modules' outputs feed a functional nonlinearity (``F.relu(self.fc1(x))``): apply
            ``nonlinearity`` to them before counting.
        default_nonlinearity: The rule of a named layer that is not an activation module, when ``nonlinearity`` is
            not given.

    Returns:
        The layers, first hidden layer first.

    Raises:
        ValueError: When no layer is found, a pattern matches nothing, or a layer's rule cannot be told.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.LeakyReLU(0.01), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> [(layer.name, layer.nonlinearity) for layer in find_hidden_layers(net)]
        [('1', 'leaky_relu'), ('3', 'tanh')]
        >>> [layer.name for layer in find_hidden_layers(net, layers=["[02]"], nonlinearity="relu", pre_activation=True)]
        ['0', '2']
    """
    if layers is not None and (isinstance(layers, str) or not layers):
        raise ValueError(f"layers must be a non-empty list of module paths or patterns, got {layers!r}")
    chosen = _discover(network) if layers is None else _match(network, layers)
    if not chosen:
        raise ValueError(
            f"{type(network).__name__} has no activation module ({', '.join(t.__name__ for t in ACTIVATION_TYPES)}):"
            " name the modules that produce the hidden activations with layers=[...] and give the nonlinearity"
            " (pre_activation=True when the network applies it functionally, as F.relu(self.fc(x)))"
        )
    if isinstance(nonlinearity, str) or nonlinearity is None:
        names: list[str | None] = [nonlinearity] * len(chosen)
    else:
        names = list(nonlinearity)
        if len(names) != len(chosen):
            raise ValueError(f"{len(names)} nonlinearities for {len(chosen)} layers ({[n for n, _ in chosen]})")
    result = []
    for (path, module), name in zip(chosen, names, strict=True):
        rule = name if name is not None else (activation_rule(module) or default_nonlinearity)
        if rule is None:
            raise ValueError(f"cannot tell the nonlinearity of layer {path!r} ({type(module).__name__}): give it")
        if rule not in NONLINEARITIES:
            raise ValueError(f"layer {path!r}: unknown nonlinearity {rule!r}; known: {', '.join(NONLINEARITIES)}")
        if pre_activation and rule == "prelu":
            raise ValueError(f"layer {path!r}: a PReLU cannot be applied functionally; hook the PReLU module itself")
        slope = getattr(module, "negative_slope", None)
        result.append(
            HiddenLayer(path, module, cast("Nonlinearity", rule), pre_activation, float(slope) if slope else None)
        )
    return result


def metric_key(name: str) -> str:
    """A layer's module path as a metric-key component (``/`` and spaces replaced)."""
    return re.sub(r"[/\s]+", "_", name) or "root"


@dataclass(frozen=True)
class ResolvedLayers:
    """The hidden layers of a network as :func:`resolve_hidden_layers` found them.

    Attributes:
        layers: The layers, first hidden layer first.
        keys: Each layer's name in logged keys: ``layer_1``, ``layer_2``, ... for a ``hidden_layers`` sequence, else
            the module path (:func:`metric_key`).
        discovered: Found by module type (their order should follow the forward pass, not registration).
        nonlinearity: The nonlinearity names, comma-separated (for titles and files).
    """

    layers: list[HiddenLayer]
    keys: list[str]
    discovered: bool
    nonlinearity: str


def resolve_hidden_layers(
    module: nn.Module,
    layers: Sequence[str] | None = None,
    nonlinearity: str | Sequence[str] | None = None,
    pre_activation: bool = False,
    *,
    warn: Callable[[str], None] | None = None,
) -> ResolvedLayers:
    """The hidden layers of ``module``, found in one of three ways (as ``DispersionMonitor`` documents them).

    The module's ``hidden_layers`` sequence (with its ``nonlinearity`` name), the modules named by ``layers``, or every
    activation module (:func:`find_hidden_layers`).

    Args:
        module: The network (a ``LightningModule`` or any ``nn.Module``).
        layers: Module paths or glob patterns; None: ``hidden_layers`` if the module has it, else discovery.
        nonlinearity: One name or one per layer; None: each module's type, else the module's ``nonlinearity``.
        pre_activation: The named layers' outputs are the nonlinearity's input (functional activations).
        warn: Called with a nonlinearity name that has no activation rule (it is counted with the rectifier rule).

    Raises:
        ValueError: When the layers or their nonlinearity cannot be found.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> found = resolve_hidden_layers(net)
        >>> found.keys, found.nonlinearity, found.discovered
        (['1', '3'], 'tanh, relu', True)
    """
    attribute = getattr(module, "nonlinearity", None)
    hidden = getattr(module, "hidden_layers", None)
    if layers is None and hidden is not None:
        modules = _hidden_sequence(module, hidden)
        given = list(nonlinearity) if isinstance(nonlinearity, (list, tuple)) else [nonlinearity] * len(modules)
        if len(given) != len(modules):
            raise ValueError(f"got {len(given)} nonlinearities for the {len(modules)} hidden layers")
        names = [name if name is not None else attribute for name in given]
        found = [
            HiddenLayer(f"hidden_layers.{i}", layer, _known_rule(name, warn))
            for i, (layer, name) in enumerate(zip(modules, names, strict=True))
        ]
        described = ", ".join(dict.fromkeys(str(name) for name in names))
        return ResolvedLayers(found, [f"layer_{i}" for i in range(1, len(found) + 1)], False, described)
    found = find_hidden_layers(
        module,
        layers,
        nonlinearity,
        pre_activation,
        default_nonlinearity=attribute if isinstance(attribute, str) else None,
    )
    described = ", ".join(dict.fromkeys(layer.nonlinearity for layer in found))
    return ResolvedLayers(found, [metric_key(layer.name) for layer in found], layers is None, described)


def _known_rule(name: Any, warn: Callable[[str], None] | None) -> Nonlinearity:
    if not isinstance(name, str) or not name:
        raise ValueError(f"could not tell the hidden nonlinearity (got {name!r})")
    if name in NONLINEARITIES:
        return cast("Nonlinearity", name)
    if warn is not None:
        warn(name)
    return "relu"


def _hidden_sequence(module: nn.Module, hidden: Any) -> list[nn.Module]:
    if isinstance(hidden, nn.Module) and not hasattr(hidden, "__iter__"):
        modules = [hidden]  # a single hidden layer
    else:
        try:
            modules = list(hidden)  # ModuleList, Sequential, list, tuple
        except TypeError:
            modules = []
    if not modules or not all(isinstance(layer, nn.Module) for layer in modules):
        raise ValueError(
            f"{type(module).__name__}.hidden_layers must be a non-empty sequence of torch modules, got {hidden!r}"
        )
    return modules


class HiddenUnitMetrics(nn.Module):
    """A :class:`~lightning_rectifier.metrics.Dispersion` metric on every hidden layer of a network, fed by hooks.

    Add it to your own ``LightningModule`` in one line; it counts the hidden activations of every forward pass made
    in evaluation mode (validation, test), and :meth:`compute` gives, per layer path, the mean activation
    probability, dispersion, dead and always-on units, reduced across DDP processes like any torchmetrics metric::

        self.hidden_units = HiddenUnitMetrics(self.net)          # in __init__
        self.log_dict(self.hidden_units.compute(prefix="val/"))  # in on_validation_epoch_end
        self.hidden_units.reset()

    Args:
        network: The network to listen to.
        layers: See :func:`find_hidden_layers`.
        nonlinearity: See :func:`find_hidden_layers`.
        pre_activation: See :func:`find_hidden_layers`.
        saturation: For tanh / sigmoid: "neg" or "both".
        threshold: Where tanh saturates.
        training: Also count forward passes in training mode.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
        >>> metrics = HiddenUnitMetrics(net)
        >>> _ = net(torch.randn(100, 4))
        >>> sorted(metrics.compute())
        ['1/always_on_units', '1/dead_units', '1/dispersion', '1/mean_activation_probability']
    """

    def __init__(
        self,
        network: nn.Module,
        layers: Sequence[str] | None = None,
        nonlinearity: str | Sequence[str] | None = None,
        pre_activation: bool = False,
        saturation: Saturation = "neg",
        threshold: float = 0.95,
        training: bool = False,
    ) -> None:
        super().__init__()
        self.layers = find_hidden_layers(network, layers, nonlinearity, pre_activation)
        self.saturation, self.threshold, self.training_too = saturation, threshold, training
        self.metrics = nn.ModuleDict()  # created on each layer's first output, when its width is known
        self._keys = [metric_key(layer.name) for layer in self.layers]
        self._handles: list[RemovableHandle] = [
            layer.module.register_forward_hook(self._hook(index)) for index, layer in enumerate(self.layers)
        ]

    def _hook(self, index: int) -> Callable[[nn.Module, Any, Any], None]:
        layer = self.layers[index]

        def count(module: nn.Module, args: Any, output: Any) -> None:
            if (module.training and not self.training_too) or not isinstance(output, Tensor):
                return
            h = layer.activations(output.detach())
            key = self._keys[index]
            if key not in self.metrics:
                from lightning_rectifier.metrics.activation import Dispersion

                self.metrics[key] = Dispersion(h.shape[-1], layer.nonlinearity, self.saturation, self.threshold).to(
                    h.device
                )
            self._metric(key).update(h)

        return count

    def _metric(self, key: str) -> Any:
        return self.metrics[key]  # a Dispersion (ModuleDict types its values as Module)

    def compute(self, prefix: str = "") -> dict[str, Tensor]:
        """``{prefix}{layer path}/{statistic}`` for every layer that has seen frames."""
        out: dict[str, Tensor] = {}
        for key in self._keys:
            if key in self.metrics:
                for stat, value in self._metric(key).compute().items():
                    out[f"{prefix}{key}/{stat}"] = value.float()
        return out

    def reset(self) -> None:
        """Forgets the counts (keep calling it after each evaluation)."""
        for key in self.metrics:
            self._metric(key).reset()

    def remove(self) -> None:
        """Removes the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
