"""The pipeline's ordering logic (recipes/kd_asr.sh stages 4-6 and 8), with a stand-in `kdasr`.

The stand-in records each call and writes what the real command would leave
behind (checkpoint, config, archive), so these tests check which experiment
starts when, not what training does: fast enough to run on every change.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

FAKE_KDASR = r"""#!/usr/bin/env bash
# Stand-in for kdasr: appends "START/END <what>" to $CALLS and leaves the outputs behind
# (kdasr plan is the real one).
set -eu
case $1 in
  plan) exec "$PYTHON" -m kdasr "$@" ;;
  train)
    dir="" config=$2
    while (( $# )); do
      if [ "$1" = --exp-dir ]; then dir=$2; fi
      shift
    done
    name=$(basename "$dir")
    echo "START train $name" >> "$CALLS"
    sleep "$(cat "$SLEEP_DIR/$name" 2>/dev/null || echo 0)"
    mkdir -p "$dir"
    cp "$config" "$dir/config.yaml"
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
  decode)
    ckpt="" method="" out=""
    while (( $# )); do
      case $1 in --checkpoint) ckpt=$2 ;; --method) method=$2 ;; --out-dir) out=$2 ;; esac
      shift
    done
    what="$(basename "$(dirname "$ckpt")") $method"
    echo "START decode $what threads=${OMP_NUM_THREADS:-unset}" >> "$CALLS"
    sleep 0.5
    [ "$what" = "bad greedy" ] && exit 3
    mkdir -p "$out" && touch "$out/decode.yaml"
    echo "END decode $what" >> "$CALLS"
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
    (egs / "conf" / "kd.yaml").write_text("kd:\n  teachers:\n    - {name: t}\n")  # reads exp/t/softlabels
    return egs


def _run(egs: Path, experiments: str, *args: str, sleeps: dict[str, float] | None = None) -> tuple[subprocess.CompletedProcess, list[str]]:
    (egs / "conf" / "experiments.txt").write_text(experiments)
    sleep_dir = egs.parent.parent / "sleeps"
    sleep_dir.mkdir(exist_ok=True)
    for name, s in (sleeps or {}).items():
        (sleep_dir / name).write_text(str(s))
    calls = egs / "calls.txt"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the threads the recipe sets, not ours
    env.update(PATH=f"{egs.parent.parent / 'bin'}:{os.environ['PATH']}", CALLS=str(calls), SLEEP_DIR=str(sleep_dir),
               PYTHON=sys.executable)
    res = subprocess.run(
        ["bash", "../../recipes/kd_asr.sh", "--corpus", "demo", "--stage", "4", "--stop-stage", "6", "--nj", "1", *args],
        cwd=egs, env=env, capture_output=True, text=True, timeout=120,
    )
    return res, calls.read_text().splitlines() if calls.exists() else []


EXPERIMENTS = """\
# name role view configs
g   student  wb  conf/plain.yaml
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
    # A student a teacher reads is trained in stage 4 and archived once; it stays a student in the results.
    assert calls.count("soft-labels g") == 1
    assert "role: student" in (recipe / "exp" / "g" / "config.yaml").read_text()
    assert "role: teacher" in (recipe / "exp" / "t" / "config.yaml").read_text()
    assert "archive: exp/t/softlabels" in (recipe / "exp" / "s" / "config.yaml").read_text()
    assert "not_a_dep" not in res.stdout + "".join(calls)


def test_a_waiting_student_holds_back_no_ready_one(recipe: Path):
    # s needs the slow teacher's archive; h (hard labels, listed after s) takes the free slot meanwhile.
    (recipe / "conf" / "kd_t.yaml").write_text("kd:\n  teachers:\n    - {name: t, archive: exp/t/softlabels}\n")
    listed = "t teacher wb conf/plain.yaml\ns student wb conf/plain.yaml conf/kd_t.yaml\nh student wb conf/plain.yaml\n"
    res, calls = _run(recipe, listed, "--train-jobs", "2", sleeps={"t": 3})
    assert res.returncode == 0, res.stdout + res.stderr
    order = {c: i for i, c in enumerate(calls)}
    assert order["START train h"] < order["END train t"], "h waited behind s"
    assert order["END train t"] < order["soft-labels t"] < order["START train s"]


def test_what_a_teacher_reads_trains_first_wherever_it_is_listed(recipe: Path):
    res, calls = _run(recipe, "t teacher wb conf/plain.yaml conf/guided.yaml\ng student wb conf/plain.yaml\n")
    assert res.returncode == 0, res.stdout + res.stderr
    assert [c for c in calls if c.startswith(("END", "soft"))] == [
        "END train g", "soft-labels g", "END train t", "soft-labels t"]


def test_unplannable_lists_stop_before_any_work(recipe: Path):
    res, calls = _run(recipe, "s student wb conf/plain.yaml conf/kd.yaml\n")
    assert res.returncode != 0 and calls == []
    assert "s reads exp/t, but t is neither listed nor trained" in res.stderr
    (recipe / "conf" / "t.yaml").write_text("kd:\n  teachers:\n    - {name: g}\n")
    res, calls = _run(recipe, "g teacher wb conf/plain.yaml conf/kd.yaml\nt teacher wb conf/plain.yaml conf/t.yaml\n")
    assert res.returncode != 0 and calls == []
    assert "read each other in a cycle: g -> t -> g" in res.stderr


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


DECODED = "a teacher wb conf/plain.yaml\nbad student wb conf/plain.yaml\ns student nb conf/plain.yaml\n"


def _decode(egs: Path, experiments: str, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    for name in ("a", "bad", "s", "fixed"):
        (egs / "exp" / name).mkdir(parents=True, exist_ok=True)
        (egs / "exp" / name / ".done").touch()
    (egs / "data" / "lang_char").mkdir(parents=True, exist_ok=True)
    (egs / "data" / "lang_char" / "graph_dir.txt").write_text("data/lang_char/graph\n")
    return _run(egs, experiments, "--stage", "8", "--stop-stage", "8", "--decode-methods", "greedy beam", *args)


def test_decodes_run_train_jobs_at_a_time_and_a_failure_stops_the_recipe(recipe: Path):
    res, calls = _decode(recipe, DECODED, "--train-jobs", "2")
    assert res.returncode != 0
    assert "some jobs failed; see exp/log/train_*.log and exp/log/decode_*.log" in res.stdout
    starts = [c for c in calls if c.startswith("START")]
    assert len(starts) == 6, "a failed decode stopped the others"
    assert {c.split("threads=")[1] for c in starts} == {str(max(1, os.cpu_count() // 2))}
    # Two at a time: the second starts before the first ends, the third only after one ended.
    assert calls.index(starts[1]) < calls.index("END decode a greedy") < calls.index(starts[2])
    assert (recipe / "exp" / "s" / "decode_test_nb_beam" / "decode.yaml").exists()
    assert "decode_test_wb_greedy" not in os.listdir(recipe / "exp" / "bad")
    # A rerun decodes only what is missing.
    res, rerun = _decode(recipe, DECODED.replace("bad", "fixed"), "--train-jobs", "2")
    assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(c.split(" threads")[0] for c in rerun[len(calls):] if c.startswith("START")) == [
        "START decode fixed beam", "START decode fixed greedy"]


def test_one_train_job_decodes_in_the_foreground(recipe: Path):
    res, calls = _decode(recipe, "a teacher wb conf/plain.yaml\n")
    assert res.returncode == 0, res.stdout + res.stderr
    assert calls == ["START decode a greedy threads=unset", "END decode a greedy",
                     "START decode a beam threads=unset", "END decode a beam"]


def test_the_pool_runs_on_across_stages(recipe: Path):
    # b is slow: s (hard labels) takes the core a leaves, and a's decode the core s leaves,
    # while b still trains; a is archived beside them (stage 5), b once trained, and decoded.
    res, calls = _run(recipe, "a teacher wb conf/plain.yaml\nb teacher wb conf/plain.yaml\ns student wb conf/plain.yaml\n",
                      "--train-jobs", "2", "--stop-stage", "8", "--decode-methods", "greedy", sleeps={"b": 4})
    assert res.returncode == 0, res.stdout + res.stderr
    order = {c.split(" threads")[0]: i for i, c in enumerate(calls)}
    assert order["END train a"] < order["START train s"] < order["END train b"]
    assert order["END train a"] < order["soft-labels a"] < order["END train b"]
    assert order["END train s"] < order["START decode a greedy"] < order["END train b"]
    assert order["END train b"] < order["START decode b greedy"]
    assert order["END train b"] < order["soft-labels b"]


def test_a_failed_training_is_not_decoded_and_stops_the_recipe(recipe: Path):
    res, calls = _run(recipe, "a teacher wb conf/plain.yaml\nx student wb conf/plain.yaml\n",
                      "--train-jobs", "2", "--stop-stage", "8", "--decode-methods", "greedy", sleeps={"x": "oops"})
    assert res.returncode != 0
    assert "x is not trained: not decoded" in res.stdout
    assert "some jobs failed" in res.stdout
    assert any(c.startswith("START decode a greedy") for c in calls)
    assert not any(c.startswith("START decode x") for c in calls)
