"""A full disk while training or dumping soft labels: one line naming the path, exit 1, nothing partial,
and a rerun with room resumes.

The disk is "full" through RLIMIT_FSIZE (the kernel refuses writes past the
limit with EFBIG), which needs no root and fails inside torch and HDF5 the
same way ENOSPC does: before the fix training died with torch's "unexpected
pos" and the dump segfaulted at exit.
"""
from __future__ import annotations

import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kdasr.data.tokenizer import build_char_lang, texts_from_cuts
from kdasr.distill.archive import load_archive
from synth import make_feature_cuts


def _kdasr(*args: str, max_file_bytes: int = 0) -> subprocess.CompletedProcess:
    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG from write(), not a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_file_bytes, max_file_bytes))

    return subprocess.run([sys.executable, "-m", "kdasr", *args], capture_output=True, text=True, timeout=300,
                          preexec_fn=limit if max_file_bytes else None)


def _leftovers(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if ".tmp" in p.name)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("full")
    cuts = make_feature_cuts(root / "feats", num_cuts=16, seed=0, prefix="tr")
    cuts.to_file(root / "cuts_train.jsonl.gz")
    build_char_lang(texts_from_cuts(cuts), root / "lang")
    cfg = {"data": {"train_cuts": str(root / "cuts_train.jsonl.gz"), "lang_dir": str(root / "lang"),
                    "max_duration": 3.0, "num_buckets": 2},
           "model": {"name": "cnn", "channels": 32, "num_layers": 2},
           "train": {"epochs": 1, "warmup_steps": 5, "save_every_n": 2, "log_every_n": 1000}}
    (root / "train.yaml").write_text(yaml.safe_dump(cfg))
    return {"root": root, "config": root / "train.yaml", "cuts": root / "cuts_train.jsonl.gz"}


def test_training_on_a_full_disk_names_the_checkpoint_and_resumes(data, tmp_path):
    exp = tmp_path / "exp"
    args = ("train", str(data["config"]), "--exp-dir", str(exp))
    full = _kdasr(*args, max_file_bytes=20_000)  # logs and config fit, a checkpoint does not
    assert full.returncode == 1
    assert full.stderr.strip().splitlines()[-1] == (
        f"Error: cannot write {exp}/checkpoints/checkpoint-2.pt: File too large (nothing of it was kept)")
    assert "Traceback" not in full.stderr and _leftovers(exp) == [] and not list(exp.rglob("*.pt"))
    again = _kdasr(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (exp / "epoch-1.pt").is_file()


def test_soft_label_dump_on_a_full_disk_fails_cleanly_and_resumes(data, tmp_path):
    exp = tmp_path / "teacher"
    assert _kdasr("train", str(data["config"]), "--exp-dir", str(exp), "--set", "train.save_every_n=0").returncode == 0
    out = tmp_path / "labels"
    args = ("soft-labels", "--checkpoint", str(exp / "best.pt"), "--cuts", str(data["cuts"]), "--out-dir", str(out),
            "--dense", "--chunk-size", "4", "--device", "cpu")
    full = _kdasr(*args, max_file_bytes=3_000)  # the first chunk's arrays do not fit
    assert full.returncode == 1  # was -11: HDF5 segfaulted at exit after a failed close
    assert full.stderr.strip().splitlines() == [
        f"Error: cannot write {out}/arrays/chunk-1-00000.h5: File too large (nothing of it was kept)"]
    assert _leftovers(out) == [] and not list((out / "arrays").iterdir())
    again = _kdasr(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    meta, cuts = load_archive(out)
    assert len(cuts) == 16 and meta.k is None
