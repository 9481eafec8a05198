"""Log-likelihood export: the archive reads back with kaldi_native_io, keys and values unchanged."""

from __future__ import annotations

import kaldi_native_io
import numpy as np
import pytest

from lightning_rectifier.decode import write_loglikelihoods


def _matrices() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {key: rng.normal(-5, 2, (frames, 7)).astype(np.float32) for key, frames in [("b-2", 5), ("a_1", 3)]}


def read_scp(path) -> list[tuple[str, np.ndarray]]:
    with kaldi_native_io.SequentialFloatMatrixReader(f"scp:{path}") as reader:
        return [(key, matrix.copy()) for key, matrix in reader]


def test_round_trip_keeps_keys_order_and_values(tmp_path) -> None:
    matrices = _matrices()
    spec = f"ark,scp:{tmp_path}/loglikes.ark,{tmp_path}/loglikes.scp"
    assert write_loglikelihoods(spec, matrices, num_senones=7) == 2
    back = read_scp(tmp_path / "loglikes.scp")
    assert [key for key, _ in back] == ["b-2", "a_1"]
    for key, matrix in back:
        np.testing.assert_array_equal(matrix, matrices[key])


def test_acoustic_scale_is_optional(tmp_path) -> None:
    matrices = _matrices()
    write_loglikelihoods(f"ark,scp:{tmp_path}/x.ark,{tmp_path}/x.scp", matrices.items(), acoustic_scale=0.1)
    for key, matrix in read_scp(tmp_path / "x.scp"):
        np.testing.assert_allclose(matrix, 0.1 * matrices[key], rtol=1e-6)
    write_loglikelihoods(tmp_path / "plain.ark", matrices)  # a bare path is an archive without scp
    with kaldi_native_io.SequentialFloatMatrixReader(f"ark:{tmp_path}/plain.ark") as reader:
        assert [key for key, _ in reader] == ["b-2", "a_1"]


@pytest.mark.parametrize(
    ("items", "kwargs", "match"),
    [
        ({"u": np.zeros(3)}, {}, r"utterance 'u': expected a \(frames, senones\) matrix"),
        ({"u": np.full((2, 3), np.nan)}, {}, "without NaN"),
        ({"u": np.zeros((2, 3)), "v": np.zeros((2, 4))}, {}, r"utterance 'v': expected 3 columns \(the first"),
        ({"u": np.zeros((2, 3))}, {"num_senones": 4}, r"expected 4 columns \(num_senones\), got 3"),
        ({"u v": np.zeros((2, 3))}, {}, "without whitespace"),
        ({"u": np.zeros((2, 3))}, {"acoustic_scale": 0.0}, "positive finite acoustic_scale"),
    ],
)
def test_bad_input(tmp_path, items, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        write_loglikelihoods(tmp_path / "x.ark", items, **kwargs)
