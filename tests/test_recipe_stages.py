"""The pipeline's ordering logic (recipes/kd_asr.sh stages 4-6), with a stand-in `kdasr`.

The stand-in records each call and writes what the real command would leave
behind (checkpoint, config, archive), so these tests check which experiment
starts when, not what training does: fast enough to run on every change.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FAKE_KDASR = r"""#!/usr/bin/env bash
# Stand-in for kdasr: appends "START/END <what>" to $CALLS and leaves the outputs behind.
set -eu
case $1 in
  train)
    dir="" role="" view="" seed=""
    while (( $# )); do
      case $1 in
        --exp-dir) dir=$2; shift ;;
        --set) case $2 in role=*) role=${2#role=} ;; view=*) view=${2#view=} ;; train.seed=*) seed=${2#*=} ;; esac; shift ;;
      esac
      shift
    done
    name=$(basename "$dir")
    echo "START train $name" >> "$CALLS"
    sleep "$(cat "$SLEEP_DIR/$name" 2>/dev/null || echo 0)"
    mkdir -p "$dir"
    printf 'role: %s\nview: %s\nseed: %s\n' "$role" "$view" "$seed" > "$dir/config.yaml"
    touch "$dir/best.pt"
    echo "END train $name" >> "$CALLS"
    ;;
  soft-labels)
    out=""
    while (( $# )); do if [ "$1" = --out-dir ]; then out=$2; fi; shift; done
    mkdir -p "$out" && echo "soft-labels $(basename "$(dirname "$out")")" >> "$CALLS"
    ;;
  archive)
    if [ "$2" = merge ]; then : > "$3/cuts.jsonl.gz"; fi
    ;;
esac
"""


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    """An egs dir beside links to recipes/ and tools/, with the stand-in kdasr first on PATH."""
    egs = tmp_path / "egs" / "x"
    (egs / "conf").mkdir(parents=True)
    for d in ("recipes", "tools"):
        (tmp_path / d).symlink_to(REPO / d)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kdasr").write_text(FAKE_KDASR)
    (bin_dir / "kdasr").chmod(0o755)
    (egs / "conf" / "plain.yaml").write_text("model: {name: cnn}\n")
    (egs / "conf" / "guided.yaml").write_text(
        "# exp/not_a_dep/softlabels in a comment is ignored\n"
        "kd:\n  strategy: guided\n  teachers:\n    - {name: g, archive: exp/g/softlabels}\n"
    )
    (egs / "conf" / "kd.yaml").write_text("kd:\n  teachers:\n    - {name: t, archive: exp/t/softlabels}\n")
    return egs


def _run(egs: Path, experiments: str, *args: str, sleeps: dict[str, float] | None = None) -> tuple[subprocess.CompletedProcess, list[str]]:
    (egs / "conf" / "experiments.txt").write_text(experiments)
    sleep_dir = egs.parent.parent / "sleeps"
    sleep_dir.mkdir(exist_ok=True)
    for name, s in (sleeps or {}).items():
        (sleep_dir / name).write_text(str(s))
    calls = egs / "calls.txt"
    env = {**os.environ, "PATH": f"{egs.parent.parent / 'bin'}:{os.environ['PATH']}",
           "CALLS": str(calls), "SLEEP_DIR": str(sleep_dir)}
    res = subprocess.run(
        ["bash", "../../recipes/kd_asr.sh", "--corpus", "demo", "--stage", "4", "--stop-stage", "6", "--nj", "1", *args],
        cwd=egs, env=env, capture_output=True, text=True, timeout=120,
    )
    return res, calls.read_text().splitlines() if calls.exists() else []


EXPERIMENTS = """\
# name role view configs
g   guide    wb  conf/plain.yaml
a   teacher  wb  conf/plain.yaml
t   teacher  wb  conf/plain.yaml conf/guided.yaml
s   student  wb  conf/plain.yaml conf/kd.yaml
"""


def test_guided_teacher_waits_for_its_guide_and_archive(recipe: Path):
    # Two training slots: g and a start together; t must wait for g (not for the slower a).
    res, calls = _run(recipe, EXPERIMENTS, "--train-jobs", "2", sleeps={"g": 0.5, "a": 3})
    assert res.returncode == 0, res.stdout + res.stderr
    order = {c: i for i, c in enumerate(calls)}
    assert order["END train g"] < order["soft-labels g"] < order["START train t"]
    assert order["START train t"] < order["END train a"], "t waited for an experiment it does not need"
    assert order["soft-labels t"] < order["START train s"]
    # A guide is trained in stage 4 and archived once, but it is a student in the results.
    assert calls.count("soft-labels g") == 1
    assert "role: student" in (recipe / "exp" / "g" / "config.yaml").read_text()
    assert "role: teacher" in (recipe / "exp" / "t" / "config.yaml").read_text()
    assert "not_a_dep" not in calls


def test_guide_listed_after_its_teacher_is_an_error(recipe: Path):
    wrong = "t teacher wb conf/plain.yaml conf/guided.yaml\ng guide wb conf/plain.yaml\n"
    res, calls = _run(recipe, wrong)
    assert res.returncode != 0
    assert "t reads the archive of g, which is not trained: list g before t" in res.stdout + res.stderr
    assert calls == []


def test_guide_trains_once_whatever_the_seeds(recipe: Path):
    res, calls = _run(recipe, EXPERIMENTS, "--seeds", "1 2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert calls.count("START train g") == 1
    assert {c for c in calls if c.startswith("START train s")} == {"START train s_seed1", "START train s_seed2"}


def test_a_line_named_seedN_trains_once_with_seed_N(recipe: Path):
    res, calls = _run(recipe, "s_seed2 student wb conf/plain.yaml\n", "--seeds", "1 3")
    assert res.returncode == 0, res.stdout + res.stderr
    assert [c for c in calls if c.startswith("START")] == ["START train s_seed2"]
    assert "seed: 2" in (recipe / "exp" / "s_seed2" / "config.yaml").read_text()
