"""The tools' options come from the library functions' signatures; signatures repeated for a reason agree."""

from __future__ import annotations

import functools
import inspect
import subprocess
import sys

import pytest

from lightning_rectifier.callbacks.decode_test import DecodeTestSet
from lightning_rectifier.decode.directory import decode_directory
from lightning_rectifier.frontend.align import align_data_dir
from lightning_rectifier.frontend.prepare import prepare_data_dir
from lightning_rectifier.module import SenoneClassifier
from lightning_rectifier.nn import DNNAcousticModel

# parameter -> flag, where the command line names or offers it differently (said in cli/tools.py)
TOOLS = {
    "prepare": (prepare_data_dir, {"wav_scp_or_folder": "--wav_scp", "progress": "--no_progress"}, set()),
    "align": (align_data_dir, {"source": "--data_dir", "progress": "--no_progress"}, {"config", "aligner"}),
    "decode": (decode_directory, {"checkpoint": "--ckpt_path"}, set()),
}


def _defaults(function) -> dict[str, object]:
    return {name: p.default for name, p in inspect.signature(function).parameters.items() if name != "self"}


@pytest.mark.parametrize("command", sorted(TOOLS))
def test_every_parameter_is_an_option_with_the_functions_help(command: str) -> None:
    function, renamed, skipped = TOOLS[command]
    result = subprocess.run(
        [sys.executable, "-m", "lightning_rectifier", command, "--help"], capture_output=True, text=True, check=True
    )
    help_text = " ".join(result.stdout.split())
    for name in _defaults(function):
        if name in skipped:
            assert f"--{name} " not in help_text, name
            continue
        assert f"{renamed.get(name, '--' + name)} " in help_text, name
    # the help is the docstring's description of the parameter
    first = "Where to write hyp.txt" if command == "decode" else "Transcripts (file or mapping)"
    assert first in help_text


def test_decode_options_flow_into_the_function(tmp_path, monkeypatch) -> None:
    from lightning_rectifier.cli import tools
    from lightning_rectifier.decode.directory import DecodeReport

    seen: dict[str, object] = {}

    def record(**kwargs: object) -> DecodeReport:
        seen.update(kwargs)
        return DecodeReport({}, None, {}, [])

    stand_in = functools.wraps(decode_directory)(record)  # the same signature, records the call
    monkeypatch.setattr("lightning_rectifier.decode.directory.decode_directory", stand_in)
    (tmp_path / "model.ckpt").write_bytes(b"")
    argv = ["--ckpt_path", str(tmp_path / "model.ckpt"), "--data_dir", "fsdd:test", "--out_dir", str(tmp_path / "out"),
            "--beam", "9", "--grammar", "word", "--write_loglikes"]  # fmt: skip
    assert tools.decode(argv) == 0  # the command completes with the stand-in's report
    expected = {**_defaults(decode_directory), "beam": 9.0, "grammar": "word", "write_loglikes": True}
    expected.update(checkpoint=str(tmp_path / "model.ckpt"), data_dir="fsdd:test", out_dir=str(tmp_path / "out"))
    assert seen == expected


def test_the_decoding_callback_takes_decode_directorys_options_with_its_defaults() -> None:
    # DecodeTestSet keeps flat options for its YAML interface; they are decode_directory's, default for default
    callback, function = _defaults(DecodeTestSet.__init__), _defaults(decode_directory)
    assert callback and all(function[name] == default for name, default in callback.items())


def test_the_lightning_module_takes_the_networks_arguments_with_its_defaults() -> None:
    # SenoneClassifier keeps them flat for --model.hidden_dim; they are DNNAcousticModel's, default for default
    network, module = _defaults(DNNAcousticModel.__init__), _defaults(SenoneClassifier.__init__)
    assert set(network) <= set(module)
    for name, default in network.items():
        if default is not inspect.Parameter.empty:
            assert module[name] == default, name


def test_decode_gmm_offers_every_parameter_of_the_gmm_decoder() -> None:
    from lightning_rectifier.decode.gmm_baseline import decode_gmm_directory

    result = subprocess.run(
        [sys.executable, "-m", "lightning_rectifier", "decode", "--gmm", "final.mdl", "--help"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    help_text = " ".join(result.stdout.split())
    for name in _defaults(decode_gmm_directory):
        assert f"--{'gmm' if name == 'model' else name} " in help_text, name
