"""Stateless forms of the metrics: frame error rate, frame cross-entropy and the paper's hidden-unit statistics.

Each metric ``x`` comes as ``x_update`` (one batch -> summable counts), ``x_compute`` (counts -> value) and ``x()``
(both on one tensor). The ``Metric`` classes in :mod:`.classification` and :mod:`.activation` keep the counts as
states and call these same functions, so a metric updated batch by batch (or on several processes) gives what the
functional gives on all the data at once; :class:`~lightning_rectifier.callbacks.DispersionMonitor` sums the same
counts over its own frames and computes with the same ``x_compute``. Torchmetrics keeps its update/compute pairs
private; here they are public because code outside this package uses them.

The activation rule is Maas, Hannun & Ng (2013), Figure 2: a rectifier unit is active when its output is positive; a
tanh unit is active when it is not saturated at its off asymptote (``h > -0.95``, "neg") or at neither asymptote
(``-0.95 < h < 0.95``, "both"). Every comparison is strict and made in float32, whatever the input dtype.

With no frames seen, every rate and probability is ``nan`` (0 / 0) and every unit count is 0.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor

from lightning_rectifier.nn import NONLINEARITIES, Nonlinearity

Saturation = Literal["neg", "both"]
SATURATIONS: tuple[str, ...] = get_args(Saturation)
# active when h > 0; ELU, GELU and SiLU go beyond the paper, which used only ReL and leaky ReL
_RECTIFIERS = ("relu", "leaky_relu", "prelu", "elu", "gelu", "silu")


def _ratio(numerator: Tensor, denominator: Tensor | int) -> Tensor:
    """Divides counts in float64 (0 / 0 -> nan) and returns float32."""
    return (numerator.double() / torch.as_tensor(denominator, device=numerator.device).double()).float()


# ---------------------------------------------------------------------------------------------------------------------
# frame error rate


def frame_error_rate_update(preds: Tensor, target: Tensor, ignore_index: int | None = None) -> tuple[Tensor, Tensor]:
    """Counts the wrong frames of one batch.

    Args:
        preds: Scores (logits or probabilities) of shape ``(..., C)``, or integer labels of the same shape as
            ``target``.
        target: Integer labels of shape ``(...)``.
        ignore_index: A target value whose frames are left out.

    Returns:
        ``(errors, total)``: int64 scalars.

    Raises:
        ValueError: If the shapes do not fit together or the labels are not integers.
    """
    if target.is_floating_point() or target.is_complex():
        raise ValueError(f"Expected integer target labels, got dtype {target.dtype}.")
    if preds.shape == target.shape:
        if preds.is_floating_point() or preds.is_complex():
            raise ValueError(
                f"preds has the shape of target {tuple(target.shape)}, so it must hold integer labels;"
                f" got dtype {preds.dtype}. Pass scores of shape (..., num_classes) to take the argmax."
            )
        labels = preds
    elif preds.ndim == target.ndim + 1 and preds.shape[:-1] == target.shape:
        labels = preds.argmax(dim=-1)
    else:
        raise ValueError(
            f"Expected preds of shape {tuple(target.shape)} (labels) or {(*target.shape, 'C')} (scores) to match"
            f" target of shape {tuple(target.shape)}, got {tuple(preds.shape)}."
        )
    wrong = labels != target
    if ignore_index is None:
        return wrong.sum(), torch.tensor(target.numel(), device=target.device)
    keep = target != ignore_index
    return (wrong & keep).sum(), keep.sum()


def frame_error_rate_compute(errors: Tensor, total: Tensor) -> Tensor:
    """Error rate from the counts (``nan`` when no frame was counted)."""
    return _ratio(errors, total)


def frame_error_rate(preds: Tensor, target: Tensor, ignore_index: int | None = None) -> Tensor:
    """Fraction of frames whose predicted senone is wrong.

    Args:
        preds: Scores of shape ``(..., C)`` (the argmax is taken) or integer labels shaped like ``target``.
        target: Integer labels.
        ignore_index: A target value (e.g. padding) whose frames are left out.

    Returns:
        A float32 scalar in ``[0, 1]``; ``nan`` when there is no frame.

    Example:
        >>> logits = torch.tensor([[2.0, 0.1, 0.3], [0.2, 1.5, 0.1], [0.1, 0.2, 3.0], [1.0, 0.0, 0.0]])
        >>> frame_error_rate(logits, torch.tensor([0, 1, 1, 2]))
        tensor(0.5000)
        >>> frame_error_rate(logits, torch.tensor([0, 1, 1, -100]), ignore_index=-100)
        tensor(0.3333)
    """
    return frame_error_rate_compute(*frame_error_rate_update(preds, target, ignore_index))


# ---------------------------------------------------------------------------------------------------------------------
# frame cross-entropy


def frame_cross_entropy_update(
    logits: Tensor, target: Tensor, ignore_index: int | None = None
) -> tuple[Tensor, Tensor]:
    """Sums the cross-entropy (natural log) of one batch.

    Args:
        logits: Unnormalised scores of shape ``(..., C)``, any floating dtype (computed in float32).
        target: Integer labels of shape ``(...)``.
        ignore_index: A target value whose frames are left out.

    Returns:
        ``(total_loss, count)``: a float64 sum and an int64 frame count.

    Raises:
        ValueError: If the shapes do not fit or a target is not a class index.
    """
    if target.is_floating_point() or target.is_complex():
        raise ValueError(f"Expected integer target labels, got dtype {target.dtype}.")
    if logits.ndim != target.ndim + 1 or logits.shape[:-1] != target.shape:
        raise ValueError(
            f"Expected logits of shape {(*target.shape, 'C')} for target of shape {tuple(target.shape)},"
            f" got {tuple(logits.shape)}."
        )
    num_classes = logits.shape[-1]
    logits = logits.detach().reshape(-1, num_classes)
    target = target.reshape(-1)
    if ignore_index is not None:
        keep = target != ignore_index
        logits, target = logits[keep], target[keep]
    if target.numel() and bool(((target < 0) | (target >= num_classes)).any()):
        bad = target[(target < 0) | (target >= num_classes)][0].item()
        hint = "" if ignore_index is not None else " (pass ignore_index for padding labels)"
        raise ValueError(f"Expected targets in [0, {num_classes}), got {bad}{hint}.")
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    nll = -log_probs.gather(1, target.unsqueeze(1)).squeeze(1)
    return nll.double().sum(), torch.tensor(target.numel(), device=target.device)


def frame_cross_entropy_compute(total_loss: Tensor, count: Tensor) -> Tensor:
    """Mean cross-entropy from the sums (``nan`` when no frame was counted)."""
    return _ratio(total_loss, count)


def frame_cross_entropy(logits: Tensor, target: Tensor, ignore_index: int | None = None) -> Tensor:
    """Mean frame cross-entropy (natural log) of senone logits against frame labels.

    The softmax is taken in float32 (also for bf16 / fp16 logits) and the per-frame losses are summed in float64.

    Args:
        logits: Unnormalised scores of shape ``(..., C)``.
        target: Integer labels of shape ``(...)`` in ``[0, C)`` (or ``ignore_index``).
        ignore_index: A target value whose frames are left out.

    Returns:
        A float32 scalar; ``nan`` when there is no frame.

    Example:
        >>> logits = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0]])
        >>> frame_cross_entropy(logits, torch.tensor([0, 1, 1]))  # (ln 2 + ln 2 + 5.0067) / 3
        tensor(2.1310)
        >>> frame_cross_entropy(logits, torch.tensor([0, 1, -1]), ignore_index=-1)  # ln 2
        tensor(0.6931)
    """
    return frame_cross_entropy_compute(*frame_cross_entropy_update(logits, target, ignore_index))


# ---------------------------------------------------------------------------------------------------------------------
# the activation rule


def activation_bounds(
    nonlinearity: Nonlinearity = "relu", saturation: Saturation = "neg", threshold: float = 0.95
) -> tuple[float, float | None]:
    """The open interval ``(lower, upper)`` in which a unit counts as active.

    * ReL family (``relu``, ``leaky_relu``, ``prelu``, ``elu``, ``gelu``, ``silu``): ``h > 0``. They have no upper
      asymptote, so ``saturation`` and ``threshold`` do not apply (they are still checked).
    * ``tanh``: "neg" -> ``h > -threshold``; "both" -> ``-threshold < h < threshold``.
    * ``sigmoid``: since ``sigmoid(x) = (tanh(x / 2) + 1) / 2``, tanh's ``∓threshold`` map to ``(1 ∓ threshold) / 2``
      (0.025 and 0.975 for 0.95): "neg" -> ``h > 0.025``; "both" -> ``0.025 < h < 0.975``.

    Args:
        nonlinearity: The hidden layer's nonlinearity.
        saturation: "neg" (not saturated at the off asymptote) or "both" (saturated at neither asymptote).
        threshold: Where tanh counts as saturated, in ``(0, 1]``; the paper uses 0.95.

    Returns:
        ``(lower, upper)``: active iff ``lower < h`` and (when ``upper`` is not None) ``h < upper``.

    Raises:
        ValueError: For an unknown nonlinearity or saturation, or a threshold outside ``(0, 1]``.

    Example:
        >>> activation_bounds("leaky_relu")
        (0.0, None)
        >>> activation_bounds("tanh", "both")
        (-0.95, 0.95)
        >>> activation_bounds("sigmoid", "both")
        (0.025, 0.975)
    """
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"Expected nonlinearity to be one of {', '.join(NONLINEARITIES)}; got {nonlinearity!r}.")
    if saturation not in SATURATIONS:
        raise ValueError(f"Expected saturation to be one of {', '.join(SATURATIONS)}; got {saturation!r}.")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold <= 1.0:
        raise ValueError(f"Expected threshold in (0, 1], got {threshold!r}.")
    if nonlinearity in _RECTIFIERS:
        return 0.0, None
    if nonlinearity == "tanh":
        lower, upper = -float(threshold), float(threshold)
    else:  # sigmoid; rounded so that 0.95 gives exactly 0.025 / 0.975
        lower, upper = round((1.0 - threshold) / 2.0, 12), round((1.0 + threshold) / 2.0, 12)
    return (lower, upper) if saturation == "both" else (lower, None)


def is_active(
    h: Tensor, nonlinearity: Nonlinearity = "relu", saturation: Saturation = "neg", threshold: float = 0.95
) -> Tensor:
    """Applies the activation rule of :func:`activation_bounds` elementwise, comparing in float32.

    Args:
        h: Hidden-unit outputs, any shape and real dtype.
        nonlinearity: See :func:`activation_bounds`.
        saturation: See :func:`activation_bounds`.
        threshold: See :func:`activation_bounds`.

    Returns:
        A bool tensor shaped like ``h``.

    Example:
        >>> is_active(torch.tensor([-0.96, -0.95, -0.5, 0.95]), "tanh", "both")
        tensor([False, False,  True, False])
    """
    lower, upper = activation_bounds(nonlinearity, saturation, threshold)
    h = h.detach().float()
    active = h > lower
    if upper is not None:
        active &= h < upper
    return active


# ---------------------------------------------------------------------------------------------------------------------
# activation probability and dispersion (per-unit counts)


def activation_probability_update(
    h: Tensor,
    num_units: int | None = None,
    nonlinearity: Nonlinearity = "relu",
    saturation: Saturation = "neg",
    threshold: float = 0.95,
) -> tuple[Tensor, int]:
    """Counts, per unit, the frames of one batch on which the unit is active.

    Args:
        h: Hidden-layer outputs of shape ``(..., num_units)``; the leading dimensions are frames.
        num_units: The expected last dimension; ``None`` takes it from ``h``.
        nonlinearity: See :func:`activation_bounds`.
        saturation: See :func:`activation_bounds`.
        threshold: See :func:`activation_bounds`.

    Returns:
        ``(active, frames)``: int64 counts of shape ``(num_units,)`` and the number of frames.

    Raises:
        ValueError: If ``h`` has no unit dimension or the wrong number of units.
    """
    if h.ndim == 0:
        raise ValueError(f"Expected hidden outputs of shape (..., num_units), got a scalar of shape {tuple(h.shape)}.")
    if num_units is not None and h.shape[-1] != num_units:
        raise ValueError(
            f"Expected hidden outputs with {num_units} units in the last dimension, got shape {tuple(h.shape)}."
        )
    active = is_active(h, nonlinearity, saturation, threshold).reshape(-1, h.shape[-1])
    # the frame count stays a Python int: a new device tensor per update would cost a host-to-device copy on GPUs
    return active.sum(dim=0, dtype=torch.int64), active.shape[0]


def activation_probability_compute(active: Tensor, frames: Tensor | int) -> Tensor:
    """Per-unit activation probabilities from the counts (``nan`` when no frame was seen)."""
    return _ratio(active, frames)


def activation_probability(
    h: Tensor, nonlinearity: Nonlinearity = "relu", saturation: Saturation = "neg", threshold: float = 0.95
) -> Tensor:
    """Per-unit activation probability: the fraction of frames on which each unit is active (paper, Figure 2).

    Args:
        h: Hidden-layer outputs of shape ``(..., num_units)``; the leading dimensions are frames.
        nonlinearity: See :func:`activation_bounds`.
        saturation: See :func:`activation_bounds`.
        threshold: See :func:`activation_bounds`.

    Returns:
        A float32 tensor of shape ``(num_units,)``.

    Example:
        >>> h = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 3.0], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]])
        >>> activation_probability(h, "relu")
        tensor([0.0000, 0.5000, 1.0000])
    """
    active, frames = activation_probability_update(h, None, nonlinearity, saturation, threshold)
    return activation_probability_compute(active, frames)


def dispersion_compute(active: Tensor, frames: Tensor | int) -> dict[str, Tensor]:
    """Dispersion statistics from the per-unit counts.

    Returns:
        ``dispersion`` (population standard deviation, ddof=0, of the per-unit probabilities),
        ``mean_activation_probability``, ``dead_units`` (never active) and ``always_on_units`` (active on every
        frame). With no frames, the first two are ``nan`` and the counts 0.
    """
    frames = torch.as_tensor(frames, device=active.device)
    probs = active.double() / frames.double()
    seen = frames > 0
    return {
        "dispersion": probs.std(correction=0).float(),
        "mean_activation_probability": probs.mean().float(),
        "dead_units": ((active == 0) & seen).sum(),
        "always_on_units": ((active == frames) & seen).sum(),
    }


def dispersion(
    h: Tensor, nonlinearity: Nonlinearity = "relu", saturation: Saturation = "neg", threshold: float = 0.95
) -> dict[str, Tensor]:
    """How evenly activity is spread over a layer's units (paper, Figure 2: ~0.04 for ReL, ~0.14 for tanh).

    ``dispersion`` is the standard deviation across units of the per-unit activation probabilities, taken over the
    population of units (ddof=0: the layer is the whole population, not a sample of it); lower is more disperse.

    Args:
        h: Hidden-layer outputs of shape ``(..., num_units)``; the leading dimensions are frames.
        nonlinearity: See :func:`activation_bounds`.
        saturation: See :func:`activation_bounds`.
        threshold: See :func:`activation_bounds`.

    Returns:
        A dict of scalars: ``dispersion`` and ``mean_activation_probability`` (float32), ``dead_units`` and
        ``always_on_units`` (int64).

    Example:
        >>> h = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 3.0], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]])
        >>> stats = dispersion(h, "relu")  # probabilities 0, 0.5, 1
        >>> stats["dispersion"], stats["dead_units"], stats["always_on_units"]
        (tensor(0.4082), tensor(1), tensor(1))
    """
    return dispersion_compute(*activation_probability_update(h, None, nonlinearity, saturation, threshold))


# ---------------------------------------------------------------------------------------------------------------------
# layer sparsity (scalar counts)


def activation_sparsity_update(
    h: Tensor, nonlinearity: Nonlinearity = "relu", saturation: Saturation = "neg", threshold: float = 0.95
) -> tuple[Tensor, Tensor, int]:
    """Counts active and exactly-zero outputs of one batch.

    Returns:
        ``(active, zeros, total)``: int64 scalars and the number of outputs (frames x units).
    """
    active = is_active(h, nonlinearity, saturation, threshold)
    zeros = (h.detach() == 0).sum()
    return active.sum(dtype=torch.int64), zeros, h.numel()


def activation_sparsity_compute(active: Tensor, zeros: Tensor, total: Tensor | int) -> dict[str, Tensor]:
    """Sparsity statistics from the counts (``nan`` when nothing was seen)."""
    return {"mean_activation_probability": _ratio(active, total), "zero_fraction": _ratio(zeros, total)}


def activation_sparsity(
    h: Tensor, nonlinearity: Nonlinearity = "relu", saturation: Saturation = "neg", threshold: float = 0.95
) -> dict[str, Tensor]:
    """Layer sparsity: how many units are active per frame, on average, and how many outputs are exactly zero.

    Args:
        h: Hidden-layer outputs of any shape (all elements count alike).
        nonlinearity: See :func:`activation_bounds`.
        saturation: See :func:`activation_bounds`.
        threshold: See :func:`activation_bounds`.

    Returns:
        A dict of float32 scalars: ``mean_activation_probability`` (the mean of the active indicator over frames and
        units, which is the mean of the per-unit probabilities) and ``zero_fraction``.

    Example:
        >>> h = torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 3.0], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]])
        >>> activation_sparsity(h, "relu")
        {'mean_activation_probability': tensor(0.5000), 'zero_fraction': tensor(0.5000)}
    """
    return activation_sparsity_compute(*activation_sparsity_update(h, nonlinearity, saturation, threshold))
