"""Importers: Kaldi dir, TSV list, lhotse recipe (fake LibriSpeech), Aurora-4 mock tree, bad inputs, CLI."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from lhotse import load_manifest

from kdasr.cli.main import cli
from kdasr.data.errors import DataError
from kdasr.data.importers import import_aurora4, import_kaldi_dir, import_lhotse_recipe, import_tsv
from synth import AURORA_TEST, AURORA_TRAIN, write_audio

KINDS = ("recordings", "supervisions", "cuts")


def assert_no_temp_files(d: Path) -> None:
    if d.exists():
        assert not [p.name for p in d.rglob(".*tmp*")], "temporary files left behind"


def assert_no_manifests(d: Path) -> None:
    assert_no_temp_files(d)
    if d.exists():
        assert not list(d.glob("*.jsonl.gz")), "a manifest was written despite the error"


def check_part(out: Path, part: str) -> list:
    for kind in KINDS:
        assert (out / f"{kind}_{part}.jsonl.gz").is_file()
    cuts = list(load_manifest(out / f"cuts_{part}.jsonl.gz"))
    for c in cuts:
        assert len(c.supervisions) == 1
        s = c.supervisions[0]
        assert s.start == pytest.approx(0, abs=1e-6) and s.duration == pytest.approx(c.duration, abs=1e-3)
        assert s.text and s.text == " ".join(s.text.split())
    assert_no_temp_files(out)
    return cuts


# ------------------------------------------------------------------ TSV


@pytest.fixture
def tsv_corpus(tmp_path: Path) -> Path:
    d = tmp_path / "corpus"
    write_audio(d / "wav" / "a1.wav", 0.3)
    write_audio(d / "wav" / "a2.flac", 0.4)
    (d / "list.tsv").write_text("path\ttext\tspeaker\nwav/a1.wav\t HELLO   world \tspkA\nwav/a2.flac\tgood  bye\n")
    return d / "list.tsv"


def test_tsv_import(tsv_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    cuts = import_tsv(tsv_corpus, out, "train", sampling_rate=16000)
    assert sorted(c.id for c in cuts) == ["a1", "a2"]
    stored = {c.id: c for c in check_part(out, "train")}
    assert stored["a1"].supervisions[0].text == "HELLO world"
    assert stored["a1"].supervisions[0].speaker == "spkA"
    assert stored["a2"].supervisions[0].speaker is None
    assert stored["a2"].duration == pytest.approx(0.4)
    assert not (out / "import_train.skipped.txt").exists()


@pytest.fixture
def bad_tsv(tmp_path: Path) -> Path:
    d = tmp_path / "bad"
    write_audio(d / "good.wav")
    write_audio(d / "narrow.wav", sr=8000)
    write_audio(d / "x" / "dup.wav")
    write_audio(d / "y" / "dup.wav")
    write_audio(d / "silent.wav")
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio" * 4)
    (d / "list.tsv").write_text(
        "good.wav\tfine\n"
        "corrupt.wav\tbroken file\n"
        "missing.wav\tnot there\n"
        "silent.wav\t   \n"
        "x/dup.wav\tone\n"
        "y/dup.wav\ttwo\n"
        "narrow.wav\twrong rate\n"
    )
    return d / "list.tsv"


def test_tsv_bad_inputs_stop_cleanly(bad_tsv: Path, tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    with pytest.raises(DataError) as err:
        import_tsv(bad_tsv, out, "train", sampling_rate=16000)
    msg = str(err.value)
    for needle in (
        "corrupt [unreadable_audio]", "corrupt.wav",
        "missing [missing_audio]", "missing.wav",
        "silent [empty_transcript]", f"{bad_tsv}:4",
        "dup [duplicate_id]", f"{bad_tsv}:5", f"{bad_tsv}:6",
        "narrow [sample_rate_mismatch]", "8000 Hz, expected 16000 Hz",
        "--skip-bad",
    ):
        assert needle in msg, needle
    assert "good [" not in msg
    assert_no_manifests(out)


def test_tsv_skip_bad_reports(bad_tsv: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "manifests"
    cuts = import_tsv(bad_tsv, out, "train", sampling_rate=16000, skip_bad=True)
    assert [c.id for c in cuts] == ["good"]
    assert [c.id for c in check_part(out, "train")] == ["good"]
    rows = [line.split("\t") for line in (out / "import_train.skipped.txt").read_text().splitlines()[1:]]
    assert {(r[0], r[1]) for r in rows} == {
        ("corrupt", "unreadable_audio"), ("missing", "missing_audio"), ("silent", "empty_transcript"),
        ("dup", "duplicate_id"), ("narrow", "sample_rate_mismatch"),
    }
    assert "skipping 5 bad entries" in caplog.text
    # A clean rerun removes the stale list.
    (bad_tsv.parent / "list.tsv").write_text("good.wav\tfine\n")
    import_tsv(bad_tsv, out, "train", sampling_rate=16000)
    assert not (out / "import_train.skipped.txt").exists()


def test_tsv_failure_keeps_previous_manifests(tsv_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    import_tsv(tsv_corpus, out, "train")
    before = (out / "cuts_train.jsonl.gz").read_bytes()
    tsv_corpus.write_text(tsv_corpus.read_text() + "nothere.wav\tx\n")
    with pytest.raises(DataError, match="nothere"):
        import_tsv(tsv_corpus, out, "train")
    assert (out / "cuts_train.jsonl.gz").read_bytes() == before
    assert_no_temp_files(out)


# ------------------------------------------------------------------ Kaldi


@pytest.fixture
def kaldi_dir(tmp_path: Path) -> Path:
    audio = tmp_path / "audio"
    a = write_audio(audio / "recA.wav", 1.0, seed=1)
    b = write_audio(audio / "recB.wav", 0.8, seed=2)
    d = tmp_path / "data" / "train"
    d.mkdir(parents=True)
    (d / "wav.scp").write_text(f"recA {a}\nrecB cat {b} |\n")
    (d / "segments").write_text("u1 recA 0.0 0.5\nu2 recA 0.5 1.0\nu3 recB 0.1 -1\n")
    (d / "text").write_text("u1 ONE  TWO\nu2 THREE\nu3   FOUR   FIVE \n")
    (d / "utt2spk").write_text("u1 s1\nu2 s1\nu3 s2\n")
    (d / "reco2dur").write_text("recA 1.0\nrecB 0.8\n")
    return d


def test_kaldi_import_segments_and_pipe(kaldi_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    import_kaldi_dir(kaldi_dir, out, "train")
    cuts = {c.id: c for c in check_part(out, "train")}
    assert sorted(cuts) == ["u1", "u2", "u3"]
    assert cuts["u2"].start == pytest.approx(0.5) and cuts["u2"].duration == pytest.approx(0.5)
    assert cuts["u3"].duration == pytest.approx(0.7)  # end -1 runs to the end of the recording
    assert cuts["u3"].supervisions[0].text == "FOUR FIVE"
    assert cuts["u1"].supervisions[0].speaker == "s1"
    recs = {r.id: r for r in load_manifest(out / "recordings_train.jsonl.gz")}
    assert recs["recB"].sources[0].type == "command"
    # The piped recording really loads through lhotse.
    assert cuts["u3"].load_audio().shape == (1, int(0.7 * 16000))


def test_kaldi_import_whole_recordings(tmp_path: Path) -> None:
    a = write_audio(tmp_path / "a.wav", 0.5)
    d = tmp_path / "dir"
    d.mkdir()
    (d / "wav.scp").write_text(f"a {a}\n")
    (d / "text").write_text("a HELLO\n")
    cuts = import_kaldi_dir(d, tmp_path / "out", "dev")
    assert [(c.id, c.supervisions[0].speaker) for c in cuts] == [("a", "a")]


def _bad_kaldi_dir(tmp_path: Path) -> Path:
    good = write_audio(tmp_path / "good.wav")
    narrow = write_audio(tmp_path / "narrow.wav", sr=8000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"garbage" * 20)
    d = tmp_path / "kdir"
    d.mkdir()
    (d / "wav.scp").write_text(
        f"good {good}\nmissing {tmp_path / 'gone.wav'}\ncorrupt {corrupt}\n"
        f"dup {good}\ndup {good}\nnarrow {narrow}\nempty {good}\npipe cat {tmp_path / 'gone2.wav'} |\n"
    )
    (d / "text").write_text("good A\nmissing B\ncorrupt C\ndup D\nnarrow E\nempty\npipe F\n")
    return d


def test_kaldi_bad_entries_stop_cleanly(tmp_path: Path) -> None:
    d = _bad_kaldi_dir(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(DataError) as err:
        import_kaldi_dir(d, out, "train", sampling_rate=16000)
    msg = str(err.value)
    for needle in (
        "missing [missing_audio]", "gone.wav",
        "corrupt [unreadable_audio]", "corrupt.wav",
        "dup [duplicate_id]", "lines 4, 5",
        "narrow [sample_rate_mismatch]",
        "empty [empty_transcript]",
        "pipe [unreadable_audio]", "gone2.wav",
    ):
        assert needle in msg, needle
    assert_no_manifests(out)


def test_kaldi_skip_bad(tmp_path: Path) -> None:
    d = _bad_kaldi_dir(tmp_path)
    out = tmp_path / "out"
    cuts = import_kaldi_dir(d, out, "train", sampling_rate=16000, skip_bad=True)
    assert [c.id for c in cuts] == ["good"]
    skipped = (out / "import_train.skipped.txt").read_text()
    for utt in ("missing", "corrupt", "dup", "narrow", "empty", "pipe"):
        assert f"\n{utt}\t" in skipped
    check_part(out, "train")


def test_kaldi_segment_of_missing_recording_named(tmp_path: Path) -> None:
    a = write_audio(tmp_path / "a.wav", 0.5)
    d = tmp_path / "dir"
    d.mkdir()
    (d / "wav.scp").write_text(f"a {a}\nb {tmp_path / 'b.wav'}\n")
    (d / "segments").write_text("u1 a 0 0.5\nu2 b 0 0.5\nu3 c 0 0.5\n")
    (d / "text").write_text("u1 X\nu2 Y\nu3 Z\n")
    with pytest.raises(DataError) as err:
        import_kaldi_dir(d, tmp_path / "out", "train")
    msg = str(err.value)
    assert "u2 [recording_rejected]" in msg and "u3 [unknown_recording]" in msg and "b.wav" in msg


# ------------------------------------------------------------------ lhotse recipe


@pytest.fixture
def fake_librispeech(tmp_path: Path) -> Path:
    root = tmp_path / "LibriSpeech"
    for part, spk, chapter in (("train-clean-100", "19", "198"), ("dev-clean", "84", "121123")):
        chap = root / part / spk / chapter
        lines = []
        for i in range(2):
            utt = f"{spk}-{chapter}-{i:04d}"
            write_audio(chap / f"{utt}.flac", 0.3 + 0.1 * i, seed=i)
            lines.append(f"{utt} WORD{i} AND  MORE\n")
        (chap / f"{spk}-{chapter}.trans.txt").write_text("".join(lines))
    return root


def test_lhotse_librispeech_recipe(fake_librispeech: Path, tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    result = import_lhotse_recipe("librispeech", fake_librispeech, out)
    assert sorted(result) == ["dev-clean", "train-clean-100"]
    cuts = check_part(out, "train-clean-100")
    assert sorted(c.id for c in cuts) == ["19-198-0000", "19-198-0001"]
    assert cuts[0].supervisions[0].text in ("WORD0 AND MORE", "WORD1 AND MORE")
    assert not list(out.glob("librispeech_*"))


def test_lhotse_recipe_parts_filter_and_errors(fake_librispeech: Path, tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    result = import_lhotse_recipe("librispeech", fake_librispeech, out, parts=["dev-clean"])
    assert list(result) == ["dev-clean"]
    assert not (out / "cuts_train-clean-100.jsonl.gz").exists()
    with pytest.raises(ValueError, match="no recipe 'librispspeech'.*librispeech"):
        import_lhotse_recipe("librispspeech", fake_librispeech, out)
    with pytest.raises(DataError, match="sample_rate_mismatch"):
        import_lhotse_recipe("librispeech", fake_librispeech, tmp_path / "o2", sampling_rate=8000)
    assert_no_manifests(tmp_path / "o2")


# ------------------------------------------------------------------ Aurora-4 (mock tree: conftest.aurora4_tree)

def test_aurora4_import(aurora4_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    result = import_aurora4(aurora4_tree, out, sampling_rate=16000)
    assert sorted(result) == ["test", "train_clean", "train_multi"]
    clean = {c.id: c for c in check_part(out, "train_clean")}
    assert sorted(clean) == sorted(u for us in AURORA_TRAIN.values() for u in us)
    assert clean["011c0201"].supervisions[0].text == "THE 011C0201 SENTENCE \\COMMA HERE"
    assert clean["011c0201"].supervisions[0].speaker == "011"
    assert clean["011c0201"].sampling_rate == 16000
    multi = check_part(out, "train_multi")
    assert sorted(c.id for c in multi) == sorted(f"{u}_multi" for us in AURORA_TRAIN.values() for u in us)
    test = {c.id: c for c in check_part(out, "test")}
    assert len(test) == 14 * len(AURORA_TEST)
    sup = test["440c0201_09"].supervisions[0]
    assert sup.text == "TEST 440C0201 SENTENCE"
    assert sup.custom == {"condition": "09", "condition_group": "D"}
    groups = {c.supervisions[0].custom["condition"]: c.supervisions[0].custom["condition_group"] for c in test.values()}
    assert groups["01"] == "A" and groups["02"] == groups["07"] == "B" and groups["08"] == "C" and groups["14"] == "D"


def test_aurora4_8k_and_dev(aurora4_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    result = import_aurora4(aurora4_tree, out, sampling_rate=8000, dev_speakers=1, seed=3)
    assert sorted(result) == ["dev", "test", "train_clean", "train_multi"]
    assert all(c.sampling_rate == 8000 for part in result.values() for c in part)
    dev_spk = {c.supervisions[0].speaker for c in result["dev"]}
    assert len(dev_spk) == 1 and all(c.id.endswith("_multi") for c in result["dev"])
    for part in ("train_clean", "train_multi"):
        assert not dev_spk & {c.supervisions[0].speaker for c in result[part]}
    only = import_aurora4(aurora4_tree, tmp_path / "o2", sampling_rate=8000, parts=["test"])
    assert list(only) == ["test"]


def test_aurora4_bad_inputs(aurora4_tree: Path, tmp_path: Path) -> None:
    base = aurora4_tree / "aurora4"
    # An 8 kHz file inside the 16 kHz copy, and a test utterance without any transcript.
    write_audio(base / "test_eval92" / "wav16k" / "03" / "442c0201.wv1", 0.2, 8000, fmt="NIST")
    write_audio(base / "test_eval92" / "wav16k" / "04" / "443c0201.wv1", 0.2, 16000, fmt="NIST")
    (base / "transcripts" / "442c0201.txt").write_text("PER  UTTERANCE TEXT\n")
    out = tmp_path / "manifests"
    with pytest.raises(DataError) as err:
        import_aurora4(aurora4_tree, out, sampling_rate=16000)
    msg = str(err.value)
    assert "442c0201_03 [sample_rate_mismatch]" in msg and "442c0201.wv1" in msg
    assert "443c0201_04 [empty_transcript]" in msg
    assert_no_manifests(out)
    result = import_aurora4(aurora4_tree, out, sampling_rate=16000, skip_bad=True)
    assert len(result["test"]) == 14 * len(AURORA_TEST)
    assert "442c0201_03\tsample_rate_mismatch" in (out / "import_test.skipped.txt").read_text()
    assert not (out / "import_train_clean.skipped.txt").exists()


# ------------------------------------------------------------------ CLI


def test_cli_import_tsv_and_kaldi(tsv_corpus: Path, kaldi_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    runner = CliRunner()
    res = runner.invoke(cli, ["prepare", "import", "tsv", str(tsv_corpus), "--part", "train", "--out-dir", str(out)])
    assert res.exit_code == 0, res.output
    check_part(out, "train")
    assert (out / "log" / "import_train.log").is_file()
    res = runner.invoke(cli, ["prepare", "import", "kaldi", str(kaldi_dir), "--part", "dev", "--out-dir", str(out)])
    assert res.exit_code == 0, res.output
    check_part(out, "dev")
    tsv_corpus.write_text(tsv_corpus.read_text() + "wav/none.wav\tgone\n")
    res = runner.invoke(cli, ["prepare", "import", "tsv", str(tsv_corpus), "--part", "bad", "--out-dir", str(out)])
    assert res.exit_code == 1 and "none [missing_audio]" in res.output
    assert not (out / "cuts_bad.jsonl.gz").exists()
    res = runner.invoke(
        cli, ["prepare", "import", "tsv", str(tsv_corpus), "--part", "bad", "--out-dir", str(out), "--skip-bad"]
    )
    assert res.exit_code == 0 and (out / "import_bad.skipped.txt").is_file()


def test_cli_import_lhotse_and_aurora4(fake_librispeech: Path, aurora4_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    runner = CliRunner()
    res = runner.invoke(
        cli,
        ["prepare", "import", "lhotse", "--recipe", "librispeech", "--corpus-dir", str(fake_librispeech),
         "--parts", "dev-clean", "--recipe-opt", "normalize_text=lower", "--out-dir", str(out)],
    )
    assert res.exit_code == 0, res.output
    assert check_part(out, "dev-clean")[0].supervisions[0].text.startswith("word")
    res = runner.invoke(
        cli,
        ["prepare", "import", "aurora4", "--corpus-dir", str(aurora4_tree), "--sampling-rate", "8000",
         "--parts", "test", "--out-dir", str(out)],
    )
    assert res.exit_code == 0, res.output
    assert len(check_part(out, "test")) == 14 * len(AURORA_TEST)


def test_kdasr_executable_imports_tsv(tsv_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "m"
    proc = subprocess.run(
        ["kdasr", "prepare", "import", "tsv", str(tsv_corpus), "--part", "test", "--out-dir", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert [c.id for c in check_part(out, "test")] == ["a1", "a2"]


def _nan_wav(path: Path, bad: float = np.nan) -> Path:
    """A float WAV (the only PCM kind that can hold them) with one NaN or Inf sample."""
    path.parent.mkdir(parents=True, exist_ok=True)
    x = (0.1 * np.sin(np.arange(4800) / 5.0)).astype(np.float32)
    x[1000] = bad
    sf.write(path, x, 16000, subtype="FLOAT")
    return path


def test_non_finite_audio_refused_naming_the_utterance(tmp_path: Path) -> None:
    """fbank would crash on them inside lilcom; the importer names them instead."""
    d = tmp_path / "c"
    write_audio(d / "ok.wav")
    _nan_wav(d / "nan.wav")
    _nan_wav(d / "inf.wav", np.inf)
    (d / "list.tsv").write_text("ok.wav\tfine\nnan.wav\tbad one\ninf.wav\tbad two\n")
    out = tmp_path / "m"
    with pytest.raises(DataError) as err:
        import_tsv(d / "list.tsv", out, "train")
    msg = str(err.value)
    assert "nan [non_finite_audio]" in msg and "inf [non_finite_audio]" in msg and "1 NaN/Inf" in msg
    assert "ok [" not in msg
    assert_no_manifests(out)
    k = tmp_path / "kdir"
    k.mkdir()
    (k / "wav.scp").write_text(f"ok {d / 'ok.wav'}\nnan {d / 'nan.wav'}\npiped cat {d / 'inf.wav'} |\n")
    (k / "text").write_text("ok A\nnan B\npiped C\n")
    with pytest.raises(DataError) as err:
        import_kaldi_dir(k, tmp_path / "m2", "train")
    assert "nan [non_finite_audio]" in str(err.value) and "piped [non_finite_audio]" in str(err.value)
