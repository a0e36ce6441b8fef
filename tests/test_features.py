"""Fbank features: frame counts, wb/nb frame sync, CMVN, resume, atomicity, CLI."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF
from click.testing import CliRunner
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment, load_manifest
from lhotse.audio import AudioSource
from lhotse.utils import compute_num_frames, fastcopy

from kdasr.cli.main import cli
from kdasr.data.features import (
    FeatureError,
    FrameSyncError,
    align_durations,
    check_frame_sync,
    compute_cmvn,
    compute_fbank,
    load_cmvn,
    save_cmvn,
)

# 16 kHz lengths in samples. 16079 is odd: its 8 kHz twin has round(8039.5) = 8040
# samples, one frame more than the 16 kHz audio under lhotse's frame formula.
LENGTHS = {"spk1-u0": 16079, "spk1-u1": 24000, "spk2-u2": 12345, "spk2-u3": 20801}


def _cut(rec: Recording, start: float = 0.0) -> MonoCut:
    dur = rec.duration - start
    return MonoCut(id=rec.id, start=start, duration=dur, channel=0, recording=rec,
                   supervisions=[SupervisionSegment(id=rec.id, recording_id=rec.id, start=0, duration=dur,
                                                    text="SOME WORDS")])


def make_audio_cuts(root: Path, lengths: dict[str, int] = LENGTHS) -> tuple[CutSet, CutSet]:
    """Sine + noise at 16 kHz and its 8 kHz resampling with exactly round(duration * 8000) samples."""
    rng = np.random.default_rng(0)
    (root / "wav").mkdir(parents=True, exist_ok=True)
    wb, nb = [], []
    for i, (cid, n) in enumerate(lengths.items()):
        t = np.arange(n) / 16000
        x = (0.3 * np.sin(2 * np.pi * (220 + 110 * i) * t) + 0.05 * rng.standard_normal(n)).astype(np.float32)
        y = AF.resample(torch.from_numpy(x), 16000, 8000).numpy()
        m = round(n / 16000 * 8000)
        y = np.pad(y, (0, max(0, m - len(y))))[:m]
        sf.write(root / "wav" / f"{cid}.wav", x, 16000)
        sf.write(root / "wav" / f"{cid}_nb.wav", y, 8000)
        wb.append(_cut(Recording.from_file(root / "wav" / f"{cid}.wav", recording_id=cid)))
        nb.append(_cut(Recording.from_file(root / "wav" / f"{cid}_nb.wav", recording_id=cid)))
    return CutSet.from_cuts(wb), CutSet.from_cuts(nb)


@pytest.fixture(scope="module")
def audio(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("audio")
    wb, nb = make_audio_cuts(root)
    feats = root / "fbank"
    wb_f = compute_fbank(wb, feats / "wb", feats / "cuts_wb.jsonl.gz", progress_bar=False)
    nb_f = compute_fbank(align_durations(nb, wb), feats / "nb", feats / "cuts_nb.jsonl.gz", progress_bar=False)
    return {"root": root, "wb": wb, "nb": nb, "wb_f": wb_f, "nb_f": nb_f}


def test_frame_counts_follow_lhotse_formula(audio: dict) -> None:
    for key, rate, dim in (("wb_f", 16000, 80), ("nb_f", 8000, 40)):
        cuts = audio[key]
        assert [c.id for c in cuts] == list(LENGTHS)  # input order kept
        for cut in cuts:
            expected = compute_num_frames(cut.duration, 0.01, rate)
            assert cut.num_frames == expected == cut.features.num_frames
            assert cut.features.sampling_rate == rate and cut.num_features == dim
            feats = cut.load_features()
            assert feats.shape == (expected, dim) and np.isfinite(feats).all()
    # The stored manifest points at the final storage dir, not the temp one.
    saved = load_manifest(audio["root"] / "fbank" / "cuts_wb.jsonl.gz")
    assert all(Path(c.features.storage_path).parent == audio["root"] / "fbank" / "wb" for c in saved)
    assert np.array_equal(saved[0].load_features(), audio["wb_f"][0].load_features())


def test_frame_sync_passes_after_alignment(audio: dict) -> None:
    check_frame_sync(audio["wb_f"], audio["nb_f"])
    check_frame_sync(audio["root"] / "fbank" / "cuts_wb.jsonl.gz", audio["root"] / "fbank" / "cuts_nb.jsonl.gz")
    # Only the odd-length cut needed a new duration: half a 16 kHz sample shorter.
    for wb, nb in zip(audio["wb"], audio["nb_f"]):
        if LENGTHS[wb.id] % 2:
            assert nb.duration == pytest.approx(wb.duration - 1 / 16000)
            assert nb.supervisions[0].duration == pytest.approx(nb.duration)
        else:
            assert nb.duration == wb.duration


def test_frame_sync_mismatch_names_the_cut(audio: dict) -> None:
    # Without alignment (the 8 kHz recording's own length), the odd-length cut gets one nb frame more.
    raw_nb = CutSet.from_cuts(fastcopy(c, duration=raw.duration) for c, raw in zip(audio["nb_f"], audio["nb"]))
    with pytest.raises(FrameSyncError, match=r"1 of 4 cut\(s\) differ in frame count: spk1-u0 \(wb 100, nb 101\)"):
        check_frame_sync(audio["wb_f"], raw_nb)
    with pytest.raises(FrameSyncError, match=r"only in the wb view: spk2-u3"):
        check_frame_sync(audio["wb_f"], audio["nb_f"].filter(lambda c: c.id != "spk2-u3"))
    with pytest.raises(FrameSyncError, match=r"no reference cut .*spk2-u3"):
        align_durations(audio["nb"], audio["wb"].filter(lambda c: c.id != "spk2-u3"))


def _fake_cut(cid: str, rate: int, num_samples: int, duration: float) -> MonoCut:
    rec = Recording(id=cid, sources=[AudioSource(type="file", channels=[0], source=f"{cid}.wav")],
                    sampling_rate=rate, num_samples=num_samples, duration=num_samples / rate)
    return fastcopy(_cut(rec), duration=duration)


def _frames(cuts) -> list[int]:
    """Frame counts by lhotse's formula, which is what ``cut.num_frames`` gives once features exist."""
    return [compute_num_frames(c.duration, 0.01, c.sampling_rate) for c in cuts]


@pytest.mark.parametrize("nb_duration", ["recording", "wb"])
def test_alignment_syncs_every_length(nb_duration: str) -> None:
    """All 16 kHz lengths over three frame periods, with the nb cut as long as its audio or as the wb cut
    (what `kdasr prepare narrowband` writes): after alignment the frame counts agree."""
    wb, nb = [], []
    for n in range(16000, 16000 + 3 * 160):
        m = round(n / 2)
        wb.append(_fake_cut(f"c{n}", 16000, n, n / 16000))
        nb.append(_fake_cut(f"c{n}", 8000, m, m / 8000 if nb_duration == "recording" else n / 16000))
    assert _frames(wb) != _frames(nb)  # lengths 160k + 79 get one nb frame too many
    assert _frames(wb) == _frames(align_durations(CutSet.from_cuts(nb), CutSet.from_cuts(wb)))


def test_alignment_refuses_short_audio() -> None:
    wb = CutSet.from_cuts([_fake_cut("short", 16000, 16000, 1.0)])
    nb = CutSet.from_cuts([_fake_cut("short", 8000, 7900, 1.0)])
    with pytest.raises(FrameSyncError, match=r"less audio than their reference: short \(needs 8000 samples"):
        align_durations(nb, wb)


def test_cmvn_matches_numpy(audio: dict, tmp_path: Path) -> None:
    stats = compute_cmvn(audio["wb_f"], progress_bar=False)
    allf = np.concatenate([c.load_features() for c in audio["wb_f"]]).astype(np.float64)
    assert stats["num_frames"] == allf.shape[0] == sum(c.num_frames for c in audio["wb_f"])
    np.testing.assert_allclose(stats["mean"], allf.mean(0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stats["std"], allf.std(0), rtol=1e-7, atol=1e-9)
    save_cmvn(stats, tmp_path / "cmvn.json")
    assert load_cmvn(tmp_path / "cmvn.json") == stats
    (tmp_path / "bad.json").write_text('{"mean": [0.0], "std": [0.0], "num_frames": 1}')
    with pytest.raises(FeatureError, match="bad.json.*positive"):
        load_cmvn(tmp_path / "bad.json")


def test_resume_skips_existing_output(audio: dict, caplog: pytest.LogCaptureFixture) -> None:
    feats = audio["root"] / "fbank"
    archive = feats / "wb" / "feats-0.lca"
    before = archive.stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        again = compute_fbank(audio["wb"], feats / "wb", feats / "cuts_wb.jsonl.gz", progress_bar=False)
    assert "skipping" in caplog.text and archive.stat().st_mtime_ns == before
    assert [c.to_dict() for c in again] == [c.to_dict() for c in load_manifest(feats / "cuts_wb.jsonl.gz")]
    with pytest.raises(FeatureError, match="80-dim.*overwrite"):
        compute_fbank(audio["wb"], feats / "wb", feats / "cuts_wb.jsonl.gz", num_mel_bins=64, progress_bar=False)


def test_failure_leaves_no_temp_files(audio: dict, tmp_path: Path) -> None:
    cuts = list(audio["wb"])
    broken = cuts[2].recording
    broken = fastcopy(broken, sources=[fastcopy(broken.sources[0], source=str(tmp_path / "missing.wav"))])
    cuts[2] = fastcopy(cuts[2], recording=broken)
    out = tmp_path / "fbank"
    with pytest.raises(FeatureError, match="could not be loaded.*spk2-u2"):
        compute_fbank(CutSet.from_cuts(cuts), out / "train_wb", out / "cuts_train_wb.jsonl.gz", progress_bar=False)
    assert list(out.iterdir()) == []
    with pytest.raises(FeatureError, match="mix sampling rates"):
        compute_fbank(audio["wb"] + audio["nb"].modify_ids(lambda i: i + "-nb"), out / "x", progress_bar=False)


def test_overwrite_replaces_storage(audio: dict, tmp_path: Path) -> None:
    out = tmp_path / "fbank"
    (out / ".wb.tmp-999999999").mkdir(parents=True)  # left by a killed run: its pid is gone
    first = compute_fbank(audio["wb"], out / "wb", out / "cuts.jsonl.gz", num_mel_bins=23, progress_bar=False)
    second = compute_fbank(audio["wb"], out / "wb", out / "cuts.jsonl.gz", overwrite=True, progress_bar=False)
    assert first[0].num_features == 23 and second[0].num_features == 80
    assert sorted(p.name for p in out.iterdir()) == ["cuts.jsonl.gz", "wb"]


def _manifest_dir(audio: dict, root: Path) -> Path:
    mdir = root / "manifests"
    mdir.mkdir(parents=True)
    ids = list(LENGTHS)
    for part, keep in (("train", ids[:3]), ("dev", ids[3:])):
        audio["wb"].subset(cut_ids=keep).to_file(mdir / f"cuts_{part}.jsonl.gz")
        audio["nb"].subset(cut_ids=keep).to_file(mdir / f"cuts_{part}_nb.jsonl.gz")
    return mdir


def test_cli_fbank_both_views(audio: dict, tmp_path: Path) -> None:
    mdir = _manifest_dir(audio, tmp_path)
    out = tmp_path / "fbank"
    runner = CliRunner()
    for view in ("wb", "nb"):
        r = runner.invoke(cli, ["prepare", "fbank", "--manifest-dir", str(mdir), "--parts", "train,dev",
                                "--view", view, "--out-dir", str(out)])
        assert r.exit_code == 0, r.output
    for part, view in [(p, v) for p in ("train", "dev") for v in ("wb", "nb")]:
        assert (out / f"cuts_{part}_{view}.jsonl.gz").is_file() and (out / f"{part}_{view}").is_dir()
    assert len(load_cmvn(out / "cmvn_wb.json")["mean"]) == 80 and len(load_cmvn(out / "cmvn_nb.json")["mean"]) == 40
    check_frame_sync(out / "cuts_train_wb.jsonl.gz", out / "cuts_train_nb.jsonl.gz")
    log = (out / "log" / "fbank.log").read_text()
    assert "frame sync" in log
    assert not [p for p in out.iterdir() if ".tmp" in p.name]

    r = runner.invoke(cli, ["prepare", "fbank", "--manifest-dir", str(mdir), "--parts", "test",
                            "--view", "nb", "--out-dir", str(out)])
    assert r.exit_code == 1 and "cuts_test_nb.jsonl.gz does not exist" in r.output and "narrowband" in r.output


@pytest.mark.slow
def test_cli_fbank_subprocess_two_jobs(audio: dict, tmp_path: Path) -> None:
    mdir = _manifest_dir(audio, tmp_path)
    out = tmp_path / "fbank"
    r = subprocess.run(
        [sys.executable, "-m", "kdasr", "prepare", "fbank", "--manifest-dir", str(mdir), "--parts", "train",
         "--view", "wb", "--out-dir", str(out), "--num-jobs", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    cuts = load_manifest(out / "cuts_train_wb.jsonl.gz")
    assert [c.id for c in cuts] == list(LENGTHS)[:3]
    assert sorted(p.name for p in (out / "train_wb").iterdir()) == ["feats-0.lca", "feats-1.lca"]
    for cut, ref in zip(cuts, audio["wb_f"]):
        np.testing.assert_array_equal(cut.load_features(), ref.load_features())
