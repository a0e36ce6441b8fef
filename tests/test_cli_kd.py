"""`kdasr soft-labels` and `kdasr archive info|check|merge` through click and a real process:
split jobs + merge equal one job, resume after a kill, info figures, check failures."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from lhotse import CutSet

from kdasr.cli.main import cli
from kdasr.data.tokenizer import build_char_lang, texts_from_cuts
from kdasr.distill.archive import COMPACT_LOGP_RANGE, ArchiveMeta, default_k, load_archive, soft_targets
from kdasr.models import build_model
from kdasr.train.checkpoint import save_checkpoint
from synth import make_feature_cuts

NUM_CUTS = 10
NUM_FEATURES = 20


@pytest.fixture(scope="module")
def kd_files(tmp_path_factory) -> dict:
    """Cuts (cuts_train_wb.jsonl.gz), a char lang dir and an untrained tiny CNN teacher checkpoint."""
    root = tmp_path_factory.mktemp("clikd")
    cuts = make_feature_cuts(root / "feats", num_cuts=NUM_CUTS, num_features=NUM_FEATURES, seed=0, prefix="tr")
    cuts_path = root / "cuts_train_wb.jsonl.gz"
    cuts.to_file(cuts_path)
    tok = build_char_lang(texts_from_cuts(cuts), root / "lang_char")
    other = build_char_lang([("x", "XYZ")], root / "lang_other")
    assert other.hash != tok.hash
    model_cfg = {"name": "cnn", "channels": 16, "num_layers": 1}
    torch.manual_seed(0)
    model = build_model(model_cfg, NUM_FEATURES, tok.vocab_size)
    ckpt_path = root / "exp" / "tiny_t" / "best.pt"
    save_checkpoint(ckpt_path, {"model": model.state_dict(), "model_cfg": model_cfg, "num_features": NUM_FEATURES,
                                "vocab_size": tok.vocab_size, "lang_hash": tok.hash, "epoch": 1, "step": 1,
                                "config": {}})
    return {"root": root, "cuts": cuts, "cuts_path": cuts_path, "lang": root / "lang_char",
            "other_lang": root / "lang_other", "ckpt": ckpt_path, "tok": tok}


def _invoke(*args) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _kdasr(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdasr", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def _dump_args(files: dict, out: Path, *extra) -> list:
    return ["soft-labels", "--checkpoint", files["ckpt"], "--cuts", files["cuts_path"], "--out-dir", out, *extra]


def _arrays(archive_dir: Path) -> dict[str, tuple]:
    """{cut id: (kd_logp, kd_ids or None)} of a finalized archive."""
    _, cuts = load_archive(archive_dir)
    out = {}
    for c in cuts:
        ids = c.custom["kd_ids"].load() if "kd_ids" in c.custom else None
        out[c.id] = (c.custom["kd_logp"].load(), ids)
    return out


def _assert_same_labels(a: Path, b: Path) -> None:
    ma, mb = ArchiveMeta.from_yaml(a / "meta.yaml"), ArchiveMeta.from_yaml(b / "meta.yaml")
    assert ma.same_labels(mb) == [] and ma.num_cuts == mb.num_cuts == NUM_CUTS
    xa, xb = _arrays(a), _arrays(b)
    assert sorted(xa) == sorted(xb)
    for cid in xa:
        np.testing.assert_array_equal(xa[cid][0], xb[cid][0], err_msg=cid)
        if xa[cid][1] is None:
            assert xb[cid][1] is None
        else:
            np.testing.assert_array_equal(xa[cid][1], xb[cid][1], err_msg=cid)


def test_help() -> None:
    for args in (["--help"], ["soft-labels", "--help"], ["archive", "--help"], ["archive", "info", "--help"],
                 ["archive", "check", "--help"], ["archive", "merge", "--help"]):
        r = _invoke(*args)
        assert r.exit_code == 0, r.output
        assert "Usage:" in r.output
    assert "soft-labels" in _invoke("--help").output and "archive" in _invoke("--help").output
    p = _kdasr("archive", "--help")
    assert p.returncode == 0 and "merge" in p.stdout


def test_two_jobs_then_merge_equal_one_job(kd_files, tmp_path) -> None:
    one, split = tmp_path / "one", tmp_path / "split"
    r = _invoke(*_dump_args(kd_files, one, "--temperature", "2"))
    assert r.exit_code == 0, r.output
    assert "10 cuts written, 0 already in the archive" in r.output and "x real time" in r.output
    assert (one / "cuts.jsonl.gz").is_file() and (one / "log" / "softlabels.1.log").is_file()
    meta = ArchiveMeta.from_yaml(one / "meta.yaml")
    # small vocabulary: dense by default; name from the exp dir; view from the cuts file name
    assert default_k(kd_files["tok"].vocab_size) is None and meta.k is None
    assert meta.teacher == "tiny_t" and meta.view == "wb" and meta.temperature == 2.0
    assert meta.lang_hash == kd_files["tok"].hash and meta.checkpoint == str(kd_files["ckpt"])
    assert meta.frame_shift == 0.04

    # job 1 in a real process, job 2 through click; neither finalizes
    p = _kdasr(*_dump_args(kd_files, split, "--temperature", "2", "--job", "1", "--num-jobs", "2"))
    assert p.returncode == 0, p.stderr
    assert "5 cuts written" in p.stdout and "kdasr archive merge" in p.stdout
    assert "real time" in (split / "log" / "softlabels.1.log").read_text()
    r = _invoke(*_dump_args(kd_files, split, "--temperature", "2", "--job", "2", "--num-jobs", "2"))
    assert r.exit_code == 0, r.output
    assert not (split / "cuts.jsonl.gz").exists()
    r = _invoke("archive", "info", split)
    assert r.exit_code == 0 and "NOT finalized" in r.output, r.output
    r = _invoke("archive", "merge", split)
    assert r.exit_code == 0, r.output
    assert "10 cuts merged" in r.output
    _assert_same_labels(one, split)


def test_merge_refuses_an_incomplete_dump(kd_files, tmp_path) -> None:
    out = tmp_path / "arch"
    r = _invoke(*_dump_args(kd_files, out, "--job", "1", "--num-jobs", "3"))
    assert r.exit_code == 0, r.output
    job3 = [c.id for c in kd_files["cuts"]][-3:]  # 10 cuts in 3 jobs: 4, 3, 3
    r = _invoke("archive", "merge", out)
    assert r.exit_code != 0 and not (out / "cuts.jsonl.gz").exists()
    assert "6 of 10 cuts have no labels" in r.output and "job(s) 2, 3 of 3" in r.output, r.output
    assert job3[0] in r.output and "--allow-partial" in r.output
    # a killed job is refused alike: job 2 finishes, job 3 dies after its first chunk
    assert _invoke(*_dump_args(kd_files, out, "--job", "2", "--num-jobs", "3")).exit_code == 0
    assert _invoke(*_dump_args(kd_files, out, "--job", "3", "--num-jobs", "3", "--chunk-size", "1")).exit_code == 0
    last = sorted((out / "chunks").glob("chunk-3-*.jsonl.gz"))[-1]
    (lost,) = CutSet.from_file(last).ids
    last.unlink()
    r = _invoke("archive", "merge", out)
    assert r.exit_code != 0 and "1 of 10 cuts have no labels" in r.output and "job(s) 3 of 3" in r.output, r.output
    assert lost in job3 and lost in r.output
    r = _invoke("archive", "merge", out, "--allow-partial")
    assert r.exit_code == 0 and "9 cuts merged" in r.output, r.output
    assert ArchiveMeta.from_yaml(out / "meta.yaml").num_cuts == 9


def test_killed_dump_resumes(kd_files, tmp_path) -> None:
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    args = ("--top-k", "3", "--chunk-size", "3")
    assert _invoke(*_dump_args(kd_files, ref, *args)).exit_code == 0
    assert _invoke(*_dump_args(kd_files, killed, *args)).exit_code == 0
    # what a kill during the last chunk leaves: no merged manifest, the last chunk only as a temp file
    chunks = sorted((killed / "chunks").glob("chunk-1-*.jsonl.gz"))
    assert len(chunks) == math.ceil(NUM_CUTS / 3)
    lost = len(CutSet.from_file(chunks[-1]))
    last_h5 = killed / "arrays" / chunks[-1].name.replace(".jsonl.gz", ".h5")
    last_h5.rename(killed / "arrays" / f".{last_h5.stem}.tmp1234.h5")
    chunks[-1].unlink()
    (killed / "cuts.jsonl.gz").unlink()

    r = _invoke(*_dump_args(kd_files, killed, *args))
    assert r.exit_code == 0, r.output
    assert f"{lost} cuts written, {NUM_CUTS - lost} already in the archive" in r.output
    assert not list((killed / "arrays").glob(".*tmp*")), "the killed job's temp file is left"
    _assert_same_labels(ref, killed)
    # a rerun of a finished dump writes nothing
    r = _invoke(*_dump_args(kd_files, killed, *args))
    assert "0 cuts written, 10 already in the archive" in r.output, r.output
    _assert_same_labels(ref, killed)


def test_info_numbers(kd_files, tmp_path) -> None:
    out = tmp_path / "arch"
    r = _invoke(*_dump_args(kd_files, out, "--top-k", "4", "--temperature", "1.5", "--teacher-name", "vgg_x",
                            "--view", "nb", "--device", "cpu", "--max-duration", "0.5"))
    assert r.exit_code == 0, r.output
    extra = make_feature_cuts(tmp_path / "feats", num_cuts=2, num_features=NUM_FEATURES, seed=3, prefix="ex")
    more = tmp_path / "more.jsonl.gz"
    (kd_files["cuts"] + extra).to_file(more)

    r = _invoke("archive", "info", out, "--cuts", more, "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    frames = sum(math.ceil(c.num_frames / 4) for c in kd_files["cuts"])
    nbytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert info["teacher"] == "vgg_x" and info["k"] == 4 and info["storage"] == "top-4"
    assert info["temperature"] == 1.5 and info["view"] == "nb" and info["finalized"] is True
    assert info["vocab_size"] == kd_files["tok"].vocab_size and info["lang_hash"] == kd_files["tok"].hash
    assert info["num_cuts"] == NUM_CUTS and info["total_frames"] == frames
    assert info["bytes_on_disk"] == nbytes and info["bytes_per_frame"] == pytest.approx(nbytes / frames)
    assert info["coverage"] == {"cuts": NUM_CUTS + 2, "covered": NUM_CUTS, "missing": 2,
                                "fraction": NUM_CUTS / (NUM_CUTS + 2)}
    arr = _arrays(out)
    assert all(lp.shape[1] == 5 and ids.shape[1] == 4 for lp, ids in arr.values())

    r = _invoke("archive", "info", out, "--cuts", more)
    assert r.exit_code == 0, r.output
    for line in ("teacher: vgg_x", "labels: top-4 of", "temperature 1.5", f"frames: {frames}",
                 f"({nbytes} bytes), {nbytes / frames:.1f} bytes/frame", "10 of 12 cuts (83.3%), 2 missing"):
        assert line in r.output, (line, r.output)


def test_compact_dump_info_check(kd_files, tmp_path) -> None:
    out, ref = tmp_path / "compact", tmp_path / "float16"
    assert _invoke(*_dump_args(kd_files, ref, "--top-k", "4")).exit_code == 0
    r = _invoke(*_dump_args(kd_files, out, "--top-k", "4", "--compact", "--logp-range", "12"))
    assert r.exit_code == 0 and "top-4, uint8 in [-12, 0]" in r.output, r.output
    arr = _arrays(out)
    assert all(lp.dtype == np.uint8 and lp.shape[1] == 5 and ids.dtype == np.uint8 for lp, ids in arr.values())
    r = _invoke("archive", "info", out, "--json")
    info = json.loads(r.output)
    assert info["quantization"] == "uint8" and info["logp_range"] == 12.0 and info["storage"] == "top-4, uint8 in [-12, 0]"
    assert info["bytes_per_frame"] < json.loads(_invoke("archive", "info", ref, "--json").output)["bytes_per_frame"]
    r = _invoke("archive", "check", out, "--cuts", kd_files["cuts_path"], "--lang-dir", kd_files["lang"])
    assert r.exit_code == 0 and "OK" in r.output, r.output
    # same ids, probabilities within a quantization step of the float16 archive's
    _, a = load_archive(out)
    _, b = load_archive(ref)
    V = kd_files["tok"].vocab_size
    for c in a:
        np.testing.assert_array_equal(c.custom["kd_ids"].load(), b[c.id].custom["kd_ids"].load())
        np.testing.assert_allclose(soft_targets(c, V), soft_targets(b[c.id], V), atol=0.05)
    r = _invoke(*_dump_args(kd_files, tmp_path / "bad", "--logp-range", "12"))
    assert r.exit_code != 0 and "--compact" in r.output


def test_compact_default_range_is_the_one_help_states(kd_files, tmp_path) -> None:
    r = _invoke(*_dump_args(kd_files, tmp_path / "compact", "--top-k", "4", "--compact"))
    assert r.exit_code == 0 and f"top-4, uint8 in [-{COMPACT_LOGP_RANGE:g}, 0]" in r.output, r.output
    assert f"[default: {COMPACT_LOGP_RANGE:g}]" in _invoke("soft-labels", "--help").output


def test_check_passes_and_fails_clearly(kd_files, tmp_path) -> None:
    out = tmp_path / "arch"
    assert _invoke(*_dump_args(kd_files, out)).exit_code == 0

    r = _invoke("archive", "check", out, "--cuts", kd_files["cuts_path"], "--lang-dir", kd_files["lang"])
    assert r.exit_code == 0, r.output
    assert "OK" in r.output and "all 10 cuts" in r.output

    # a student cut the teacher never saw
    extra = make_feature_cuts(tmp_path / "feats", num_cuts=1, num_features=NUM_FEATURES, seed=3, prefix="ex")
    missing = tmp_path / "missing.jsonl.gz"
    (kd_files["cuts"] + extra).to_file(missing)
    r = _invoke("archive", "check", out, "--cuts", missing)
    assert r.exit_code == 1
    assert "1 of 11 student cuts have no soft labels: ex-000" in r.output, r.output

    # a student with another token set (real process: exit status and stderr)
    p = _kdasr("archive", "check", out, "--cuts", kd_files["cuts_path"], "--lang-dir", kd_files["other_lang"])
    assert p.returncode == 1
    assert "token set differs" in p.stderr and "lang hash" in p.stderr, p.stderr

    # narrowband cuts with the same ids but other durations: other frame counts
    nb = make_feature_cuts(tmp_path / "nb", num_cuts=NUM_CUTS, num_features=NUM_FEATURES, seed=7, prefix="tr")
    nb_path = tmp_path / "cuts_train_nb.jsonl.gz"
    nb.to_file(nb_path)
    bad = [c.id for c in nb if math.ceil(c.num_frames / 4) != math.ceil(kd_files["cuts"][c.id].num_frames / 4)]
    assert bad
    r = _invoke("archive", "check", out, "--cuts", nb_path, "--lang-dir", kd_files["lang"])
    assert r.exit_code == 1
    assert f"{len(bad)} cuts have a different number of output frames" in r.output, r.output
    assert f"{bad[0]}: archive " in r.output


def test_errors_are_clear(kd_files, tmp_path) -> None:
    out = tmp_path / "arch"
    r = _invoke(*_dump_args(kd_files, out, "--top-k", "3", "--dense"))
    assert r.exit_code == 2 and "exclude each other" in r.output
    V = kd_files["tok"].vocab_size
    r = _invoke(*_dump_args(kd_files, out, "--top-k", str(V)))
    assert r.exit_code == 1 and f"k={V} must lie in" in r.output, r.output
    r = _invoke(*_dump_args(kd_files, out, "--job", "3", "--num-jobs", "2"))
    assert r.exit_code == 2 and "--job 3" in r.output
    # features of another dimension than the teacher's: named cut and file
    wide = make_feature_cuts(tmp_path / "wide", num_cuts=2, num_features=NUM_FEATURES + 4, seed=0, prefix="w")
    wide_path = tmp_path / "cuts_wide.jsonl.gz"
    wide.to_file(wide_path)
    r = _invoke("soft-labels", "--checkpoint", kd_files["ckpt"], "--cuts", wide_path, "--out-dir", tmp_path / "w")
    assert r.exit_code == 1 and "cut w-000" in r.output and "24 features" in r.output, r.output
    # relabelling an archive with other settings is refused
    assert _invoke(*_dump_args(kd_files, out, "--top-k", "3")).exit_code == 0
    r = _invoke(*_dump_args(kd_files, out, "--top-k", "2"))
    assert r.exit_code == 1 and "made differently" in r.output, r.output
    # merge/info/check of a directory that holds no archive
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (["archive", "merge", empty], ["archive", "info", empty],
                 ["archive", "check", empty, "--cuts", kd_files["cuts_path"]]):
        r = _invoke(*args)
        assert r.exit_code == 1 and "meta.yaml does not exist" in r.output, (args, r.output)
