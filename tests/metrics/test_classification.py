"""FrameErrorRate and FrameCrossEntropy: class (batched) == functional (all at once) == numpy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_rectifier.metrics import FrameCrossEntropy, FrameErrorRate
from lightning_rectifier.metrics.functional import frame_cross_entropy, frame_error_rate

NUM_CLASSES = 7
BATCH_SIZES = (5, 0, 17, 1, 32)  # includes an empty batch


def np_frame_error_rate(scores: np.ndarray, target: np.ndarray, ignore_index: int | None) -> float:
    labels = scores if scores.ndim == target.ndim else np.argmax(scores, axis=-1)
    keep = np.ones(target.shape, dtype=bool) if ignore_index is None else target != ignore_index
    return float(np.sum((labels != target) & keep) / np.sum(keep))


def np_frame_cross_entropy(logits: np.ndarray, target: np.ndarray, ignore_index: int | None) -> float:
    keep = np.ones(target.shape, dtype=bool) if ignore_index is None else target != ignore_index
    x = logits[keep].astype(np.float64)
    t = target[keep]
    top = x.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(x - top).sum(axis=1))
    return float(np.mean(log_z - x[np.arange(len(t)), t]))


def make_batches(seed: int, dtype: torch.dtype, ignore_index: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(seed)
    batches = []
    for n in BATCH_SIZES:
        logits = torch.from_numpy(rng.normal(scale=3.0, size=(n, NUM_CLASSES)).astype(np.float32)).to(dtype)
        target = torch.from_numpy(rng.integers(0, NUM_CLASSES, size=n))
        if ignore_index is not None:
            target[torch.from_numpy(rng.random(n) < 0.2)] = ignore_index
        batches.append((logits, target))
    return batches


def as_numpy(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[np.ndarray, np.ndarray]:
    logits = torch.cat([b[0] for b in batches]).float().numpy()  # bf16 -> float32 is exact
    target = torch.cat([b[1] for b in batches]).numpy()
    return logits, target


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("ignore_index", [None, -100, 3])
def test_frame_error_rate_matches_reference(dtype: torch.dtype, ignore_index: int | None) -> None:
    batches = make_batches(0, dtype, ignore_index)
    metric = FrameErrorRate(ignore_index=ignore_index)
    for logits, target in batches:
        metric.update(logits, target)
    all_logits, all_target = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    expected = np_frame_error_rate(*as_numpy(batches), ignore_index)
    assert metric.compute().item() == pytest.approx(expected, abs=1e-6)
    assert frame_error_rate(all_logits, all_target, ignore_index).item() == pytest.approx(expected, abs=1e-6)
    assert 0.5 < expected < 1.0  # random scores: mostly wrong, not all


@pytest.mark.parametrize("ignore_index", [None, -1])
def test_frame_error_rate_label_preds(ignore_index: int | None) -> None:
    rng = np.random.default_rng(1)
    target = rng.integers(0, 4, size=50)
    preds = np.where(rng.random(50) < 0.7, target, rng.integers(0, 4, size=50))
    if ignore_index is not None:
        target[::5] = ignore_index
    metric = FrameErrorRate(ignore_index=ignore_index)
    metric.update(torch.from_numpy(preds[:20]), torch.from_numpy(target[:20]))
    metric.update(torch.from_numpy(preds[20:]), torch.from_numpy(target[20:]))
    expected = np_frame_error_rate(preds, target, ignore_index)
    assert metric.compute().item() == pytest.approx(expected, abs=1e-6)
    assert frame_error_rate(torch.from_numpy(preds), torch.from_numpy(target), ignore_index).item() == pytest.approx(
        expected, abs=1e-6
    )


def test_frame_error_rate_hand_example() -> None:
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
    target = torch.tensor([0, 1, 0, 1, 9])  # argmax 0, 1, 2, 0, 2 -> frames 3, 4 wrong; 9 is padding
    assert frame_error_rate(probs, target).item() == pytest.approx(3 / 5)
    assert frame_error_rate(probs, target, ignore_index=9).item() == pytest.approx(2 / 4)
    assert frame_error_rate(probs[:, :3].argmax(-1), target, ignore_index=9).item() == pytest.approx(2 / 4)
    # leading dimensions (e.g. batch x time) are frames too
    assert frame_error_rate(probs[:4].reshape(2, 2, 3), target[:4].reshape(2, 2)).item() == pytest.approx(2 / 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("ignore_index", [None, -100])
def test_frame_cross_entropy_matches_reference(dtype: torch.dtype, ignore_index: int | None) -> None:
    batches = make_batches(2, dtype, ignore_index)
    metric = FrameCrossEntropy(ignore_index=ignore_index)
    for logits, target in batches:
        metric.update(logits, target)
    all_logits, all_target = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    expected = np_frame_cross_entropy(*as_numpy(batches), ignore_index)
    assert metric.total_loss.dtype == torch.float64
    assert metric.compute().item() == pytest.approx(expected, rel=1e-5)
    assert frame_cross_entropy(all_logits, all_target, ignore_index).item() == pytest.approx(expected, rel=1e-5)
    # matches torch's own loss on the same (float32) logits
    reference = torch.nn.functional.cross_entropy(
        all_logits.float(), all_target, ignore_index=-100 if ignore_index is None else ignore_index
    )
    assert metric.compute().item() == pytest.approx(reference.item(), rel=1e-5)


def test_frame_cross_entropy_hand_example() -> None:
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0]])
    expected = (2 * math.log(2) + math.log(1 + math.exp(5.0))) / 3
    assert frame_cross_entropy(logits, torch.tensor([0, 1, 1])).item() == pytest.approx(expected, rel=1e-6)
    assert frame_cross_entropy(logits, torch.tensor([0, 1, -1]), ignore_index=-1).item() == pytest.approx(math.log(2))


def test_frame_cross_entropy_keeps_float64_sum_after_module_cast() -> None:
    metric = FrameCrossEntropy()
    metric.to(torch.bfloat16)  # Module.to(dtype) casts float states; the sum must still be accumulated in float64
    metric.update(torch.zeros(3, 4), torch.tensor([0, 1, 2]))
    assert metric.total_loss.dtype == torch.float64
    assert metric.compute().item() == pytest.approx(math.log(4), rel=1e-6)


def test_frame_cross_entropy_rejects_bad_targets() -> None:
    with pytest.raises(ValueError, match=r"targets in \[0, 3\), got 3"):
        frame_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="ignore_index"):
        frame_cross_entropy(torch.zeros(2, 3), torch.tensor([0, -100]))
    with pytest.raises(ValueError, match="shape"):
        frame_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="integer"):
        frame_cross_entropy(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))


def test_frame_error_rate_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="shape"):
        frame_error_rate(torch.zeros(4, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer labels"):
        frame_error_rate(torch.zeros(2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="integer target"):
        frame_error_rate(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="ignore_index"):
        FrameErrorRate(ignore_index=0.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("metric_class", [FrameErrorRate, FrameCrossEntropy])
def test_empty_and_unused(metric_class: type) -> None:
    metric = metric_class(ignore_index=-1)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(metric.compute().item())
    metric.reset()
    metric.update(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    metric.update(torch.zeros(2, 3), torch.tensor([-1, -1]))  # all ignored
    assert math.isnan(metric.compute().item())
    metric.update(torch.tensor([[0.0, 2.0, 0.0]]), torch.tensor([1]))
    assert metric.compute().item() == pytest.approx(0.0 if metric_class is FrameErrorRate else 0.2395, abs=1e-4)
    metric.reset()
    assert (metric.total if metric_class is FrameErrorRate else metric.count).item() == 0


def test_forward_gives_batch_value_and_accumulates() -> None:
    metric = FrameErrorRate()
    batch_value = metric(torch.tensor([0, 1]), torch.tensor([0, 0]))
    assert batch_value.item() == pytest.approx(0.5)
    metric(torch.tensor([1, 1]), torch.tensor([1, 1]))
    assert metric.compute().item() == pytest.approx(0.25)
