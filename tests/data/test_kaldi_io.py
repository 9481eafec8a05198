"""Reading and writing Kaldi tables, checked against Kaldi's own outputs and hand-made archives."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import kaldi_native_io
import numpy as np
import pytest

from lightning_rectifier.data import KaldiDataError, KaldiFormatError, TransitionModel
from lightning_rectifier.data.kaldi_io import (
    index_features,
    read_alignments,
    read_features,
    read_matrix,
    write_alignments,
    write_features,
    write_matrices,
)


def test_compressed_archive_matches_kaldis_own_decompression(fixtures: Path) -> None:
    # feats.ark is exactly what Kaldi wrote when decompressing feats_compressed.ark
    plain = dict(read_features(fixtures / "ami_mfcc" / "feats.ark"))
    compressed = dict(read_features(fixtures / "ami_mfcc" / "feats_compressed.ark"))
    assert list(plain) == list(compressed)
    assert len(plain) == 10
    for key, matrix in plain.items():
        assert matrix.dtype == np.float32 and matrix.shape[1] == 13
        np.testing.assert_allclose(compressed[key], matrix, atol=1e-4, rtol=0)


def test_text_archive_matches_binary(fixtures: Path) -> None:
    plain = dict(read_features(fixtures / "ami_mfcc" / "feats.ark"))
    text = dict(read_features(fixtures / "ami_mfcc" / "feats_ascii.ark"))
    assert len(text) == 2
    for key, matrix in text.items():
        np.testing.assert_allclose(matrix, plain[key], atol=1e-4)


def test_arrays_are_copies_not_views_into_the_reader_buffer(fixtures: Path) -> None:
    matrices = [m for _, m in read_features(fixtures / "ami_mfcc" / "feats_compressed.ark")]
    again = [m for _, m in read_features(fixtures / "ami_mfcc" / "feats_compressed.ark")]
    assert all(m.flags.owndata or m.base is None for m in matrices)
    for a, b in zip(matrices, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len({m.ctypes.data for m in matrices}) == len(matrices)


def test_scp_range_syntax_is_kaldis_inclusive_ranges(fixtures: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the scp's folder and parents
    full = dict(read_features(fixtures / "ami_mfcc" / "feats_ascii.ark"))["AMI_ES2011a_H00_FEE041_0003714_0003915"]
    scp = tmp_path / "ranges.scp"
    ark = fixtures / "ami_mfcc" / "feats_ascii.ark"
    scp.write_text(
        f"whole {ark}:35877\nall {ark}:35877[:]\nrows {ark}:35877[0:5]\ncols {ark}:35877[:,7:12]\n"
        f"both {ark}:35877[20:30,7:12]\n"
    )
    got = list(read_features(scp))
    assert [k for k, _ in got] == ["whole", "all", "rows", "cols", "both"]
    np.testing.assert_allclose(got[0][1], full)
    np.testing.assert_allclose(got[1][1], full)
    np.testing.assert_allclose(got[2][1], full[0:6])
    np.testing.assert_allclose(got[3][1], full[:, 7:13])
    np.testing.assert_allclose(got[4][1], full[20:31, 7:13])
    shapes = [(e.num_rows, e.num_cols) for e in index_features(scp)]
    assert shapes == [(199, 13), (199, 13), (6, 13), (199, 6), (11, 6)]


def test_fixture_scp_with_out_of_range_columns_is_refused_with_the_line(fixtures: Path) -> None:
    # the fixture's [:,7:13] asks for a 14th column of a 13-column matrix: Kaldi's ranges are inclusive
    with pytest.raises(
        KaldiDataError, match=r"feats_ascii.scp line 5, utterance '.*slice2'.*column range 7:13.*inclusive"
    ):
        list(read_features(fixtures / "ami_mfcc" / "feats_ascii.scp"))
    # the lines before it are fine
    entries = (fixtures / "ami_mfcc" / "feats_ascii.scp").read_text().splitlines()[:4]
    scp = fixtures.parent / "_tmp_first_lines.scp"
    try:
        scp.write_text("\n".join(line.replace("ami_mfcc/", "fixtures/ami_mfcc/") for line in entries) + "\n")
        assert [e.num_rows for e in index_features(scp)] == [285, 199, 199, 6]
    finally:
        scp.unlink()


def test_data_directory_scp_with_paths_relative_to_the_directory(fixtures: Path) -> None:
    feats = dict(read_features(fixtures / "mini_librispeech" / "feats.scp"))
    assert {k: v.shape for k, v in feats.items()} == {
        "lbi-3536-23268-0000": (1987, 13),
        "lbi-6241-61943-0000": (693, 13),
        "lbi-8842-304647-0000": (969, 13),
    }
    reference = kaldi_native_io.FloatMatrix.read(
        str(fixtures / "mini_librispeech" / "data" / "raw_mfcc_mini_librispeech2.1.ark") + ":25996"
    ).numpy()
    np.testing.assert_array_equal(feats["lbi-6241-61943-0000"], reference)


def test_missing_archive_names_the_scp_line_and_file(tmp_path: Path) -> None:
    scp = tmp_path / "feats.scp"
    scp.write_text("utt1 /nonexistent/raw_mfcc.1.ark:12\n")
    with pytest.raises(KaldiDataError, match=r"feats.scp line 1, utterance 'utt1': file '/nonexistent/raw_mfcc.1.ark'"):
        list(read_features(scp))
    with pytest.raises(KaldiDataError, match="does not exist"):
        list(read_features(tmp_path / "missing.ark"))


def test_scp_offset_past_the_end_of_the_archive(fixtures: Path, tmp_path: Path) -> None:
    scp = tmp_path / "feats.scp"
    scp.write_text(
        f"utt1 {fixtures / 'ami_mfcc' / 'feats.ark'}:39\nutt2 {fixtures / 'ami_mfcc' / 'feats.ark'}:999999\n"
    )
    with pytest.raises(KaldiDataError, match=r"line 2, utterance 'utt2': offset 999999 is past the end .*125080 bytes"):
        list(read_features(scp))


def test_truncated_archive_is_an_error_not_a_short_read(fixtures: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.ark"
    truncated.write_bytes((fixtures / "ami_mfcc" / "feats.ark").read_bytes()[:20000])
    # kaldi_native_io's own sequential reader stops after the first utterance with only a warning on stderr
    silently = [k for k, _ in kaldi_native_io.SequentialFloatMatrixReader(f"ark:{truncated}")]
    assert len(silently) == 1
    with pytest.raises(KaldiFormatError, match=r"utterance 'AMI_ES2011a_H00_FEE041_0003714_0003915'.*truncated"):
        list(read_features(truncated))
    compressed = tmp_path / "truncated_compressed.ark"
    compressed.write_bytes((fixtures / "ami_mfcc" / "feats_compressed.ark").read_bytes()[:10000])
    with pytest.raises(KaldiFormatError, match="truncated"):
        list(read_features(compressed))


@pytest.mark.parametrize("archive", ["feats.ark", "feats_compressed.ark"])
def test_an_archive_cut_inside_a_header_names_the_utterance(fixtures: Path, tmp_path: Path, archive: str) -> None:
    data = (fixtures / "ami_mfcc" / archive).read_bytes()
    first = data.index(b" ") + 1  # the first matrix: "\0B", its token, then its sizes or compressed header
    for cut in range(first + 1, first + 28):
        truncated = tmp_path / f"cut{cut}.ark"
        truncated.write_bytes(data[:cut])
        with pytest.raises(KaldiFormatError, match=r"cut\d+.ark, utterance 'AMI_\w+'.*(truncated|ends inside)"):
            list(read_features(truncated))


def test_a_file_that_is_not_an_archive(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.ark"
    bogus.write_bytes(b"utt1 \0BXYZ garbage")
    with pytest.raises(KaldiFormatError, match=r"bogus.ark, utterance 'utt1': expected a Kaldi matrix"):
        list(read_features(bogus))


def test_shell_pipes_are_refused_unless_allowed(fixtures: Path, tmp_path: Path) -> None:
    ark = fixtures / "ami_mfcc" / "feats.ark"
    scp = tmp_path / "feats.scp"
    scp.write_text(f"utt1 copy-feats ark:{ark} ark:- |\n")
    with pytest.raises(KaldiDataError, match=r"feats.scp line 1, utterance 'utt1'.*shell command.*allow_pipes=True"):
        list(read_features(scp))
    with pytest.raises(KaldiDataError, match="shell command"):
        list(read_features(f"ark:cat {ark} |"))
    allowed = dict(read_features(f"ark:cat {ark} |", allow_pipes=True))
    np.testing.assert_array_equal(allowed["AMI_ES2011a_H00_FEE041_0003427_0003714"], read_matrix(f"{ark}:39"))


@pytest.mark.parametrize(
    ("method", "tolerance"),
    [("auto", 0.05), ("speech_feature", 0.05), ("2byte_auto", 0.01), ("1byte_auto", 0.3), (None, 0.0)],
)
def test_write_features_round_trip(fixtures: Path, tmp_path: Path, method, tolerance) -> None:
    feats = dict(read_features(fixtures / "ami_mfcc" / "feats.ark"))
    count = write_features(f"ark,scp:{tmp_path}/x.ark,{tmp_path}/x.scp", feats.items(), compression=method)
    assert count == 10
    back = dict(read_features(tmp_path / "x.scp"))
    for key, matrix in feats.items():
        span = matrix.max() - matrix.min()
        np.testing.assert_allclose(back[key], matrix, atol=tolerance * span / 10 + 1e-6)


def test_cmvn_statistics_written_as_double_matrices(tmp_path: Path) -> None:
    stats = np.array([[1.5, 2.5, 3.0], [4.0, 5.0, 0.0]])
    write_matrices(f"ark,scp:{tmp_path}/cmvn.ark,{tmp_path}/cmvn.scp", [("spk1", stats)])
    entry = (tmp_path / "cmvn.scp").read_text().split()[1]
    np.testing.assert_array_equal(read_matrix(entry, dtype=np.float64), stats)


# ------------------------------------------------------------------------------------------------- alignments


def test_binary_and_text_alignment_archives_agree(fixtures: Path) -> None:
    binary = dict(read_alignments(fixtures / "ami_mfcc" / "ali.ark"))
    text = dict(read_alignments(fixtures / "ami_mfcc" / "ali_ascii.ark"))
    assert list(binary) == list(text) and len(binary) == 10
    reference = dict(kaldi_native_io.SequentialInt32VectorReader(f"ark:{fixtures / 'ami_mfcc' / 'ali.ark'}"))
    for key, values in binary.items():
        assert values.dtype == np.int32
        np.testing.assert_array_equal(values, text[key])
        np.testing.assert_array_equal(values, np.array(reference[key]))
    assert int(max(v.max() for v in binary.values())) == 11204


def test_gzipped_alignments_and_globs_in_natural_order(fixtures: Path, tmp_path: Path) -> None:
    items = list(read_alignments(fixtures / "ami_mfcc" / "ali.ark"))
    for part, chunk in ((1, items[:3]), (2, items[3:6]), (10, items[6:])):
        plain = tmp_path / f"part{part}.ark"
        write_alignments(plain, chunk)
        (tmp_path / f"ali.{part}.gz").write_bytes(gzip.compress(plain.read_bytes()))
    got = list(read_alignments(str(tmp_path / "ali.*.gz")))
    assert [k for k, _ in got] == [k for k, _ in items]  # ali.2 before ali.10
    for (_, a), (_, b) in zip(got, items, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(list(read_alignments([tmp_path / "ali.1.gz", f"ark:{tmp_path / 'ali.2.gz'}"]))) == 6


def test_alignment_scp(fixtures: Path, tmp_path: Path) -> None:
    items = dict(read_alignments(fixtures / "ami_mfcc" / "ali.ark"))
    write_alignments(f"ark,scp:{tmp_path}/ali.ark,{tmp_path}/ali.scp", items.items())
    back = dict(read_alignments(f"scp:{tmp_path / 'ali.scp'}"))
    assert list(back) == list(items)
    for key in items:
        np.testing.assert_array_equal(back[key], items[key])


def test_truncated_gzipped_alignment_names_the_utterance(fixtures: Path, tmp_path: Path) -> None:
    raw = (fixtures / "ami_mfcc" / "ali.ark").read_bytes()[:5000]
    (tmp_path / "ali.1.gz").write_bytes(gzip.compress(raw))
    with pytest.raises(KaldiFormatError, match=r"ali.1.gz, utterance '.*': the vector of \d+ int32 values.*truncated"):
        list(read_alignments(tmp_path / "ali.1.gz"))


def test_gunzip_pipe_is_refused_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(KaldiDataError, match="shell command"):
        list(read_alignments("ark:gunzip -c exp/tri4_ali/ali.1.gz |"))
    with pytest.raises(KaldiDataError, match="no alignment files match"):
        list(read_alignments(str(tmp_path / "ali.*.gz")))


def test_transition_id_alignments_map_to_pdf_ids_with_the_model(fixtures: Path, tmp_path: Path) -> None:
    model = TransitionModel.read(fixtures / "mfa_mono" / "final.mdl")
    rng = np.random.default_rng(0)
    tids = {f"utt{i}": rng.integers(1, model.num_transition_ids + 1, 50) for i in range(3)}
    plain = tmp_path / "ali.ark"
    write_alignments(plain, tids.items())
    (tmp_path / "ali.1.gz").write_bytes(gzip.compress(plain.read_bytes()))
    mapped = dict(read_alignments(tmp_path / "ali.*.gz", transition_model=fixtures / "mfa_mono" / "final.mdl"))
    for key, values in tids.items():
        np.testing.assert_array_equal(mapped[key], model.pdf_ids(values))
        assert mapped[key].max() < model.num_pdfs


def test_transition_id_outside_the_model_names_file_and_utterance(fixtures: Path, tmp_path: Path) -> None:
    # the AMI fixture holds RM transition-ids up to 11204: far outside this 1206-id model
    model = TransitionModel.read(fixtures / "mfa_mono" / "final.mdl")
    shutil.copy(fixtures / "ami_mfcc" / "ali.ark", tmp_path / "ali.ark")
    with pytest.raises(KaldiDataError, match=r"ali.ark, utterance 'adg04_sr009_trn'.*1206"):
        list(read_alignments(tmp_path / "ali.ark", transition_model=model))


def test_an_alignment_scp_reads_each_archive_once(tmp_path: Path) -> None:
    from unittest import mock

    from lightning_rectifier.data import int_vectors

    rng = np.random.default_rng(0)
    items = [(f"u{i:03d}", rng.integers(0, 50, 20 + i).astype(np.int32)) for i in range(40)]
    write_alignments(f"ark,scp:{tmp_path / 'a.ark'},{tmp_path / 'a.scp'}", items[:20])
    write_alignments(f"ark,scp:{tmp_path / 'b.ark'},{tmp_path / 'b.scp'}", items[20:])
    (tmp_path / "ali.scp").write_text((tmp_path / "a.scp").read_text() + (tmp_path / "b.scp").read_text())
    with mock.patch.object(int_vectors, "_open_bytes", wraps=int_vectors._open_bytes) as opened:
        read = list(read_alignments(tmp_path / "ali.scp"))
    assert opened.call_count == 2  # once per archive, not once per entry
    assert [k for k, _ in read] == [k for k, _ in items]
    for (_, got), (_, expected) in zip(read, items, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_pipe_entries_in_feats_scp_work_when_allowed(ami_data_dir: Path) -> None:
    from lightning_rectifier.data.datadir import KaldiDataDir
    from lightning_rectifier.data.kaldi_io import index_features

    entries = index_features(ami_data_dir / "feats.scp")
    first = entries[0]
    lines = (ami_data_dir / "feats.scp").read_text().splitlines()
    # the command prints the archive from the matrix's offset: Kaldi reads the one matrix there
    lines[0] = f"{first.key} tail -c +{first.offset + 1} {first.path} |"
    (ami_data_dir / "feats.scp").write_text("".join(f"{line}\n" for line in lines))
    with pytest.raises(KaldiDataError, match="pipe"):
        index_features(ami_data_dir / "feats.scp")
    piped = index_features(ami_data_dir / "feats.scp", allow_pipes=True)
    assert (piped[0].num_rows, piped[0].num_cols) == (first.num_rows, first.num_cols) and first.num_rows > 0
    data = KaldiDataDir.load(ami_data_dir, allow_pipes=True)
    assert data.feat_dim == 13
    read = dict(read_features(ami_data_dir / "feats.scp", allow_pipes=True))
    reference = dict(read_features(first.path))
    np.testing.assert_array_equal(read[first.key], reference[first.key])
