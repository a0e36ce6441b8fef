"""The demo recipe end to end on the tiny corpus, through the real shell scripts.

This is the CI's full-pipeline run: demo corpus → narrowband view → fbank →
tokens → three teachers → soft labels → ten students (hard labels, single
teachers, switch/multistream/average, broadband → narrowband, a teacher run
online under time warp) → graph → greedy/beam/WFST decoding of each and of
the teachers' ensemble → RESULTS.md and the plot. Epochs are cut to keep it
to a few minutes; the WERs are not meaningful at this size, the plumbing is.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _recipe_copy(tmp_path: Path) -> Path:
    """egs/demo copied next to links to the shared recipes/ and tools/, so outputs stay in tmp."""
    shutil.copytree(REPO / "egs" / "demo", tmp_path / "egs" / "demo", ignore=shutil.ignore_patterns("data", "exp"))
    for d in ("recipes", "tools"):
        (tmp_path / d).symlink_to(REPO / d)
    return tmp_path / "egs" / "demo"


def _run(recipe: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(["bash", "run.sh", *args], cwd=recipe, env=env, capture_output=True, text=True,
                          timeout=1500)


@pytest.mark.slow
def test_demo_recipe_tiny_end_to_end(tmp_path):
    recipe = _recipe_copy(tmp_path)
    overrides = "train.epochs=2 train.warmup_steps=5 data.max_duration=40"
    res = _run(recipe, "--demo-size", "tiny", "--nj", "2", "--bpe-vocab", "50", "--train-overrides", overrides)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    exp = recipe / "exp"
    names = [line.split()[0] for line in (recipe / "conf" / "experiments.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    for name in names:
        assert (exp / name / ".done").is_file(), name
        for method in ("greedy", "beam", "wfst"):
            view = "nb" if name.endswith("nb") or "_nb" in name else "wb"
            summary = yaml.safe_load((exp / name / f"decode_test_{view}_{method}" / "decode.yaml").read_text())
            assert 0.0 <= summary["wer"] <= 200.0
            if method != "greedy":  # the LM weight was chosen on dev, from the recipe's grid
                assert summary["lm_weight"] in (0.3, 0.5, 0.7, 1.0, 1.4)
                assert summary["lm_weight_scan"]["cuts"] == f"data/fbank/cuts_dev_{view}.jsonl.gz"
    for teacher in ("vgg_wb", "lstm_wb", "vgg_nb"):
        meta = yaml.safe_load((exp / teacher / "softlabels" / "meta.yaml").read_text())
        assert meta["teacher"] == teacher and meta["temperature"] == 2.0
    # The broadband → narrowband student read labels the broadband teachers wrote on the wb cuts.
    cfg = yaml.safe_load((exp / "cnn_nb_kd_wb" / "config.yaml").read_text())
    assert cfg["data"]["train_cuts"].endswith("cuts_train_nb.jsonl.gz")
    assert [t["name"] for t in cfg["kd"]["teachers"]] == ["vgg_wb", "lstm_wb"]
    assert len(list((exp / "cnn_wb_multistream").glob("cuts_train_multistream.jsonl.gz"))) == 1
    # The online student ran the broadband teacher's checkpoint on the broadband view, time warp on.
    cfg = yaml.safe_load((exp / "cnn_nb_kd_vgg_online" / "config.yaml").read_text())
    assert cfg["kd"]["teachers"] == [{"name": "vgg_wb", "checkpoint": "exp/vgg_wb/best.pt",
                                      "cuts": "data/fbank/cuts_train_wb.jsonl.gz"}]
    assert cfg["data"]["augment"]["specaugment"]["time_warp_factor"] == 80
    # The two broadband teachers decoded together: the ensemble row, and the gap each KD student closes.
    ens = yaml.safe_load((exp / "ensemble_wb" / "decode_test_wb_greedy" / "decode.yaml").read_text())
    assert ens["members"] == ["exp/vgg_wb/best.pt", "exp/lstm_wb/best.pt"]
    results = (exp / "RESULTS.md").read_text()
    for name in names + ["ensemble_wb"]:
        assert name in results
    assert "Share of the gap from the hard-label student to the ensemble" in results
    assert (exp / "wer_vs_params.png").stat().st_size > 1000

    # A rerun finds every stage done and redoes nothing.
    res = _run(recipe, "--demo-size", "tiny", "--bpe-vocab", "50", "--stage", "4", "--stop-stage", "6")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "skip vgg_wb (done)" in res.stdout and "skip cnn_nb_kd_wb (done)" in res.stdout


def test_recipe_help_lists_stages_options():
    res = subprocess.run(["bash", str(REPO / "egs" / "demo" / "run.sh"), "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    assert "--stage" in res.stdout + res.stderr
