"""The frame cache: the same frames as loading from the archives, keyed by inputs and settings, checked on opening."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_rectifier.data import AlignedFramesDataModule
from lightning_rectifier.data.corpus import load_frame_store, plan_frame_store
from lightning_rectifier.data.datadir import KaldiDataDir
from lightning_rectifier.data.errors import KaldiDataError
from lightning_rectifier.data.frame_cache import (
    FrameCache,
    FrameCacheError,
    bfloat16_bits,
    cache_builders,
    write_frame_cache,
)
from lightning_rectifier.data.frame_store import FrameStore
from lightning_rectifier.data.kaldi_io import write_alignments, write_features
from lightning_rectifier.data.pipeline import FeaturePipeline
from tests.conftest import synthetic_labels
from tests.crashing import segfault


def _labelled(data_dir: Path, senones: int = 23, seed: int = 0) -> dict[str, np.ndarray]:
    labels = synthetic_labels(data_dir, senones, seed)
    write_alignments(data_dir / "ali.ark", labels.items())
    return labels


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_cache_holds_exactly_the_store_loaded_from_the_archives(ami_data_dir: Path, tmp_path: Path, dtype) -> None:
    labels = _labelled(ami_data_dir)
    data = KaldiDataDir.load(ami_data_dir)
    pipeline = FeaturePipeline("speaker", True, 2, 2, 4, 3)
    reference, report = load_frame_store(data, labels, pipeline=pipeline, dtype=dtype)
    plan = plan_frame_store(data, labels, pipeline=pipeline)
    cache = write_frame_cache(plan, tmp_path / "c", dtype=dtype, num_senones=23, workers=1)
    store = FrameCache.open(cache.path, verify="full").store()
    assert store.keys == reference.keys and store.padded.dtype == reference.padded.dtype
    assert torch.equal(store.padded.float(), reference.padded.float())
    assert torch.equal(store.labels, reference.labels) and torch.equal(store.offsets, reference.offsets)
    assert torch.equal(store.frame_utterance, reference.frame_utterance)
    np.testing.assert_array_equal(cache.label_counts, np.bincount(reference.labels.numpy(), minlength=23))
    mean, std = cache.moments(2_000_000)
    torch.testing.assert_close((mean, std), reference.input_moments())
    assert cache.report().summary() == report.summary()
    part = cache.read_store(3, 7)  # a chunk: its frames spliced exactly as in the whole store
    first, end = reference.utterance_range(3)[0], reference.utterance_range(6)[1]
    assert torch.equal(
        part.gather(torch.arange(end - first)).features, reference.gather(torch.arange(first, end)).features
    )


def test_bfloat16_bits_round_as_torch_does() -> None:
    x = np.random.default_rng(0).standard_normal(100_000).astype(np.float32) * 1e3
    ours = torch.from_numpy(bfloat16_bits(x)).view(torch.bfloat16)
    assert torch.equal(ours, torch.from_numpy(x).bfloat16())


def test_damaged_or_truncated_cache_is_refused_naming_the_file(ami_data_dir: Path, tmp_path: Path) -> None:
    labels = _labelled(ami_data_dir)
    plan = plan_frame_store(KaldiDataDir.load(ami_data_dir), labels, pipeline=FeaturePipeline())
    cache = write_frame_cache(plan, tmp_path / "c", workers=1)
    features = cache.path / "features.bin"
    data = bytearray(features.read_bytes())
    data[len(data) // 2] ^= 0xFF
    features.write_bytes(bytes(data))
    with pytest.raises(FrameCacheError, match=r"features.bin: block 0 .* fails its checksum"):
        FrameCache.open(cache.path, verify="full")
    features.write_bytes(bytes(data[:-4]))
    with pytest.raises(FrameCacheError, match=r"features.bin: \d+ bytes, the cache recorded"):
        FrameCache.open(cache.path)
    meta = json.loads((cache.path / "meta.json").read_text())
    meta["version"] = 0
    (cache.path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(FrameCacheError, match="version 0, expected version 1"):
        FrameCache.open(cache.path)


def test_non_finite_utterances_are_skipped_and_compacted_or_refused(ami_data_dir: Path, tmp_path: Path) -> None:
    from lightning_rectifier.data.kaldi_io import read_features

    feats = dict(read_features(ami_data_dir / "feats.scp"))
    bad = sorted(feats)[2]
    feats[bad][5, 3] = np.nan
    write_features(f"ark,scp:{ami_data_dir / 'feats.ark'},{ami_data_dir / 'feats.scp'}", sorted(feats.items()))
    labels = _labelled(ami_data_dir)
    data = KaldiDataDir.load(ami_data_dir)
    with pytest.raises(KaldiDataError, match=rf"{bad}.*NaN or Inf \(first at frame 5, dimension 3\)"):
        write_frame_cache(plan_frame_store(data, labels, pipeline=FeaturePipeline("none")), tmp_path / "a", workers=1)
    assert not (tmp_path / "a").exists() and not list(tmp_path.glob(".a.partial*"))  # nothing half-written
    reference, _ = load_frame_store(data, labels, pipeline=FeaturePipeline("none"), skip_invalid=True)
    plan = plan_frame_store(data, labels, pipeline=FeaturePipeline("none"), skip_invalid=True)
    cache = write_frame_cache(plan, tmp_path / "b", workers=1)
    store = FrameCache.open(cache.path, verify="full").store()
    assert bad not in store.keys and store.keys == reference.keys
    assert torch.equal(store.padded, reference.padded) and torch.equal(store.labels, reference.labels)
    assert "NaN/Inf 1" in cache.report().summary()
    third = reference.num_frames // 3  # every 3rd utterance of the survivors, not of the plan
    cache = write_frame_cache(plan, tmp_path / "c", workers=1, moments_frames=third)
    torch.testing.assert_close(cache.moments(third), reference.input_moments(third))


def test_worker_processes_write_the_same_cache_and_moments(ami_data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import lightning_rectifier.data.frame_cache as frame_cache

    monkeypatch.setattr(frame_cache, "_MIN_FRAMES_PER_WORKER", 1)  # a pool even for a corpus this small
    labels = _labelled(ami_data_dir)
    data = KaldiDataDir.load(ami_data_dir)
    pipeline = FeaturePipeline("speaker", True, 2, 2, 4, 3)
    reference, _ = load_frame_store(data, labels, pipeline=pipeline, dtype="bfloat16")
    third = reference.num_frames // 3
    plan = plan_frame_store(data, labels, pipeline=pipeline)
    with monkeypatch.context() as patched:  # the workers' sums are used, not a second pass over the written cache
        patched.setattr(FrameStore, "input_moments", lambda *args: pytest.fail("moments recomputed from the files"))
        cache = write_frame_cache(plan, tmp_path / "c", dtype="bfloat16", workers=2, moments_frames=third)
    assert cache.meta["workers"] == 2
    store = FrameCache.open(cache.path, verify="full").store()
    assert store.keys == reference.keys and torch.equal(store.padded, reference.padded)
    assert torch.equal(store.labels, reference.labels)
    torch.testing.assert_close(cache.moments(third), reference.input_moments(third))
    every = reference.input_moments()  # and the stride matters: the moments over all utterances differ
    assert not torch.allclose(every[0], cache.moments(third)[0])


def test_workers_started_before_the_plan_build_the_same_cache_and_stay_open(
    ami_data_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    import lightning_rectifier.data.frame_cache as frame_cache

    monkeypatch.setattr(frame_cache, "_MIN_FRAMES_PER_WORKER", 100)
    labels = _labelled(ami_data_dir)
    data = KaldiDataDir.load(ami_data_dir)
    assert cache_builders(8, 199) is None  # too few frames for a second process
    with cache_builders(8, 250) as pool:  # at most one worker per 100 frames
        assert pool is not None and pool.size == 2
        plan = plan_frame_store(data, labels, pipeline=FeaturePipeline("speaker", True, 2, 2, 4, 3))
        cache = write_frame_cache(plan, tmp_path / "c", pool=pool)
        assert cache.meta["workers"] == 2
        assert list(pool.imap(abs, [-3])) == [(0, 3)]  # the caller's pool is left open
    reference = write_frame_cache(plan, tmp_path / "r", workers=1)
    for name in ("features.bin", "labels.bin", "offsets.bin"):
        assert (cache.path / name).read_bytes() == (reference.path / name).read_bytes()


def test_the_datamodule_builds_with_the_workers_it_is_given(ami_data_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import lightning_rectifier.data.frame_cache as frame_cache

    monkeypatch.setattr(frame_cache, "_MIN_FRAMES_PER_WORKER", 1)
    _labelled(ami_data_dir)
    for workers in (1, 2):
        _module(ami_data_dir, tmp_path / f"cache{workers}", cache_workers=workers).prepare_data()
        built = sorted((tmp_path / f"cache{workers}").iterdir())  # the training and the validation set
        assert [json.loads((cache / "meta.json").read_text())["workers"] for cache in built] == [workers] * 2


def _fallocate_failing_with(code: int):
    import ctypes

    class LibC:
        @staticmethod
        def fallocate(*_args) -> int:
            ctypes.set_errno(code)
            return -1

    return LibC()


def test_the_features_file_is_allocated_before_it_is_written(ami_data_dir: Path, tmp_path: Path, monkeypatch):
    import errno

    import lightning_rectifier.data.frame_cache as frame_cache

    file = tmp_path / "f"
    with open(file, "wb") as handle:
        handle.truncate(1 << 20)
        allocated = frame_cache._allocate(handle.fileno(), 1 << 20, file)
    if allocated:  # Linux on a filesystem that can: the blocks exist before any write
        assert os.stat(file).st_blocks * 512 >= 1 << 20
    plan = plan_frame_store(KaldiDataDir.load(ami_data_dir), _labelled(ami_data_dir), pipeline=FeaturePipeline())
    reference = write_frame_cache(plan, tmp_path / "reference", workers=1)
    monkeypatch.setattr(frame_cache, "_libc", lambda: _fallocate_failing_with(errno.EOPNOTSUPP))
    cache = write_frame_cache(plan, tmp_path / "unallocated", workers=1)  # a filesystem that cannot: written anyway
    assert (cache.path / "features.bin").read_bytes() == (reference.path / "features.bin").read_bytes()
    monkeypatch.setattr(frame_cache, "_libc", lambda: _fallocate_failing_with(errno.ENOSPC))
    monkeypatch.setattr(frame_cache, "_write_unit", lambda unit: pytest.fail("work started"))
    with pytest.raises(FrameCacheError, match=r"features\.bin: cannot allocate 0\.\d+ GiB: No space left on device"):
        write_frame_cache(plan, tmp_path / "caches" / "c", workers=1)
    assert list((tmp_path / "caches").iterdir()) == []


def test_a_worker_that_crashes_is_reported_with_its_utterances(ami_data_dir: Path, tmp_path: Path, monkeypatch):
    import lightning_rectifier.data.frame_cache as frame_cache

    monkeypatch.setattr(frame_cache, "_MIN_FRAMES_PER_WORKER", 1)
    monkeypatch.setattr(frame_cache, "_write_unit", segfault)  # a real SIGSEGV in the worker
    plan = plan_frame_store(KaldiDataDir.load(ami_data_dir), _labelled(ami_data_dir), pipeline=FeaturePipeline())
    with pytest.raises(FrameCacheError, match=r"exit code -11 .*\(utterances '.+' \.\. '.+' of .*feats") as error:
        write_frame_cache(plan, tmp_path / "c", workers=2)
    assert "cache_workers=1" in str(error.value)
    assert not (tmp_path / "c").exists()


def test_a_build_that_cannot_fit_is_refused_before_any_work(ami_data_dir: Path, tmp_path: Path, monkeypatch):
    import shutil

    import lightning_rectifier.data.frame_cache as frame_cache

    plan = plan_frame_store(KaldiDataDir.load(ami_data_dir), _labelled(ami_data_dir), pipeline=FeaturePipeline())
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(frame_cache.shutil, "disk_usage", lambda _: usage._replace(free=1000))
    monkeypatch.setattr(frame_cache, "_write_unit", lambda unit: pytest.fail("work started"))
    with pytest.raises(FrameCacheError, match=r"needs 0\.\d+ GiB but only 0\.00 GiB are free.*use dtype float16"):
        write_frame_cache(plan, tmp_path / "caches" / "c", workers=1)
    assert list((tmp_path / "caches").iterdir()) == []  # nor a partial folder left behind


def test_a_failed_write_names_the_cache_file_and_the_utterance(ami_data_dir: Path, tmp_path: Path, monkeypatch):
    import errno

    import lightning_rectifier.data.frame_cache as frame_cache

    def full(*_args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    plan = plan_frame_store(KaldiDataDir.load(ami_data_dir), _labelled(ami_data_dir), pipeline=FeaturePipeline())
    monkeypatch.setattr(frame_cache.os, "pwrite", full)
    first = min(plan.kept, key=lambda kept: (str(kept[0].path), kept[0].offset))[0].key
    with pytest.raises(FrameCacheError, match=rf"features\.bin: cannot write .*{first}.*No space left on device"):
        write_frame_cache(plan, tmp_path / "caches" / "c", workers=1)
    assert list((tmp_path / "caches").iterdir()) == []


def _module(data_dir: Path, cache: Path, **settings) -> AlignedFramesDataModule:
    return AlignedFramesDataModule(train_dir=str(data_dir), valid_fraction=0.3, cache_dir=str(cache), **settings)


def test_datamodule_maps_its_cache_and_later_runs_read_no_archive(ami_data_dir: Path, tmp_path: Path, monkeypatch):
    _labelled(ami_data_dir)
    plain = AlignedFramesDataModule(train_dir=str(ami_data_dir), valid_fraction=0.3, delta_order=2)
    plain.setup("fit")
    cached = _module(ami_data_dir, tmp_path / "cache", delta_order=2)
    cached.prepare_data()
    cached.setup("fit")
    for split in ("train", "valid"):
        assert cached.stores[split].keys == plain.stores[split].keys
        assert torch.equal(cached.stores[split].padded, plain.stores[split].padded)
        assert cached.reports[split].summary() == plain.reports[split].summary()
    torch.testing.assert_close(cached.priors, plain.priors)
    torch.testing.assert_close(cached.input_moments(), plain.input_moments())
    assert len(list((tmp_path / "cache").iterdir())) == 2
    if Path("/proc/self/maps").exists():  # mapped, not copied
        assert sum("features.bin" in line for line in Path("/proc/self/maps").read_text().splitlines()) >= 2

    import lightning_rectifier.data.datadir as datadir
    import lightning_rectifier.data.pipeline as pipeline

    def refuse(*args, **kwargs):
        raise AssertionError("archives read although the cache exists")

    monkeypatch.setattr(pipeline, "read_matrix", refuse)
    monkeypatch.setattr(datadir, "index_features", refuse)
    again = _module(ami_data_dir, tmp_path / "cache", delta_order=2)
    assert (again.feat_dim, again.num_senones) == (plain.feat_dim, plain.num_senones)
    again.setup("fit")
    assert torch.equal(again.stores["train"].padded, plain.stores["train"].padded)


def test_changed_inputs_or_settings_select_another_cache(ami_data_dir: Path, tmp_path: Path) -> None:
    _labelled(ami_data_dir, seed=0)
    first = _module(ami_data_dir, tmp_path / "cache")
    first.setup("fit")
    names = {p.name for p in (tmp_path / "cache").iterdir()}
    _module(ami_data_dir, tmp_path / "cache").setup("fit")
    assert {p.name for p in (tmp_path / "cache").iterdir()} == names  # same inputs: reused
    _module(ami_data_dir, tmp_path / "cache", store_dtype="float16").setup("fit")
    assert len(list((tmp_path / "cache").iterdir())) == 4  # a setting: new train and valid caches
    labels = _labelled(ami_data_dir, seed=1)  # new alignments (size equal, contents and time differ)
    stat = (ami_data_dir / "ali.ark").stat()
    os.utime(ami_data_dir / "ali.ark", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    changed = _module(ami_data_dir, tmp_path / "cache")
    changed.setup("fit")
    assert len(list((tmp_path / "cache").iterdir())) == 6
    key = changed.stores["train"].keys[0]
    np.testing.assert_array_equal(changed.stores["train"].labels[: labels[key].size].numpy(), labels[key])


def test_shell_command_entries_cannot_key_a_cache(tmp_path: Path) -> None:
    from lightning_rectifier.data.frame_cache import table_files

    scp = tmp_path / "feats.scp"
    scp.write_text("utt1 copy-feats ark:x.ark ark:- |\n")
    with pytest.raises(FrameCacheError, match=r"feats.scp.*utt1.*shell command"):
        table_files(scp)
    with pytest.raises(FrameCacheError, match="shell command"):
        table_files("ark:gunzip -c ali.*.gz |")


def test_a_meta_json_without_its_fields_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "meta.json").write_text(json.dumps({"format": "lightning-rectifier frame cache", "version": 1}))
    with pytest.raises(FrameCacheError, match=r"meta.json: lacks dim, dtype, files"):
        FrameCache.open(tmp_path)
    (tmp_path / "meta.json").write_text("[1, 2]")
    with pytest.raises(FrameCacheError, match="version None, expected version 1"):
        FrameCache.open(tmp_path)
