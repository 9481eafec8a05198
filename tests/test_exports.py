"""Lazy public names, and the import paths that moved in 0.2: they still work, with a DeprecationWarning."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from lightning_rectifier.exports import MOVED

OLD_NAMES = {
    "lightning_rectifier.audio": ("AudioError", "lightning_rectifier.frontend.audio"),
    "lightning_rectifier.features": ("FeatureConfig", "lightning_rectifier.frontend.features"),
    "lightning_rectifier.prepare": ("prepare_data_dir", "lightning_rectifier.frontend.prepare"),
    "lightning_rectifier.align": ("align_data_dir", "lightning_rectifier.frontend.align"),
    "lightning_rectifier.lexicon": ("read_lexicon", "lightning_rectifier.decode.lexicon"),
    "lightning_rectifier.run_layout": ("best_checkpoint", "lightning_rectifier.compare.run_layout"),
    "lightning_rectifier.inference": ("DecodeTestSet", "lightning_rectifier.callbacks.decode_test"),
}


def test_every_moved_module_is_checked() -> None:
    assert set(OLD_NAMES) == set(MOVED)


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_an_old_import_path_gives_the_new_object_and_warns(old: str) -> None:
    name, new = OLD_NAMES[old]
    code = (
        "import warnings\nwith warnings.catch_warnings(record=True) as caught:\n    warnings.simplefilter('always')\n"
        f"    import {old} as o\n"
        "print('warned:', *[w.message for w in caught if w.category is DeprecationWarning])\n"
        f"import {new} as n\nprint(getattr(o, {name!r}) is getattr(n, {name!r}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert f"warned: {old} moved to" in result.stdout and result.stdout.strip().endswith("True"), result.stdout


def test_the_renamed_segment_class_and_the_inference_names() -> None:
    with pytest.warns(DeprecationWarning, match="moved to lightning_rectifier.frontend.align"):
        align = importlib.reload(importlib.import_module("lightning_rectifier.align"))
    from lightning_rectifier.frontend.align import Span

    assert align.Segment is Span
    inference = importlib.import_module("lightning_rectifier.inference")
    from lightning_rectifier.decode.acoustic_model import AcousticModel
    from lightning_rectifier.decode.directory import decode_directory

    assert inference.AcousticModel is AcousticModel and inference.decode_directory is decode_directory
    with pytest.raises(AttributeError, match="moved to"):
        inference.no_such_name  # noqa: B018


def test_a_loader_from_the_frame_store_module_warns() -> None:
    from lightning_rectifier.data import frame_store, loaders

    with pytest.warns(DeprecationWarning, match="moved to lightning_rectifier.data.loaders"):
        assert frame_store.FrameLoader is loaders.FrameLoader


def test_an_old_class_path_in_a_recipe_still_resolves() -> None:
    from jsonargparse.typing import import_object  # what LightningCLI uses for class_path

    from lightning_rectifier.callbacks import DecodeTestSet

    sys.modules.pop("lightning_rectifier.inference", None)  # as in a fresh process
    with pytest.warns(DeprecationWarning, match="lightning_rectifier.inference moved to"):
        assert import_object("lightning_rectifier.inference.DecodeTestSet") is DecodeTestSet
