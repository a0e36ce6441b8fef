"""The recipe shell tools: tools/parse_options.sh and tools/run.sh, run as a
recipe runs them (in a subprocess)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
RUN = str(TOOLS / "run.sh")

SCRIPT = """\
#!/usr/bin/env bash
set -euo pipefail
stage=0
nj=4
use_gpu=false
exp_dir=exp/x
help_message="Usage: $0 [options] <data-dir>"
. {tools}/parse_options.sh || exit 1
echo "stage=$stage nj=$nj use_gpu=$use_gpu exp_dir=$exp_dir rest=$*"
"""


def sh(args: list[str], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    script = tmp_path / "recipe.sh"
    script.write_text(SCRIPT.format(tools=TOOLS))
    return script


def test_parse_options_sets_known_options(recipe: Path) -> None:
    out = sh(["bash", str(recipe), "--stage", "3", "--exp-dir=a/b", "--use-gpu", "true",
              "data/train", "--nj", "2"], recipe.parent)
    assert out.returncode == 0, out.stderr
    # Parsing stops at the first positional argument; the rest stays in "$@".
    assert out.stdout.strip() == "stage=3 nj=4 use_gpu=true exp_dir=a/b rest=data/train --nj 2"


def test_parse_options_config_file_then_command_line(recipe: Path) -> None:
    (recipe.parent / "opts.conf").write_text("nj=9\nstage=2\n")
    out = sh(["bash", str(recipe), "--nj", "1", "--config", "opts.conf", "d"], recipe.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "stage=2 nj=1 use_gpu=false exp_dir=exp/x rest=d"


def test_parse_options_unknown_option_lists_valid_ones(recipe: Path) -> None:
    out = sh(["bash", str(recipe), "--num-jobs", "2", "d"], recipe.parent)
    assert out.returncode == 1
    assert "unknown option --num-jobs" in out.stderr
    for option in ("--nj", "--stage", "--use-gpu", "--exp-dir"):
        assert option in out.stderr
    assert out.stdout == ""


def test_parse_options_environment_variables_are_not_options(recipe: Path) -> None:
    env = {**os.environ, "http_proxy": "http://proxy:3128"}
    out = subprocess.run(["bash", str(recipe), "--http-proxy", "x"], cwd=recipe.parent, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "unknown option --http-proxy" in out.stderr


@pytest.mark.parametrize("args, message", [
    (["--use-gpu", "yes"], "is a boolean"),
    (["--nj"], "needs a value"),
])
def test_parse_options_bad_values(recipe: Path, args: list[str], message: str) -> None:
    out = sh(["bash", str(recipe), *args], recipe.parent)
    assert out.returncode == 1
    assert message in out.stderr


def test_parse_options_help_prints_message_and_current_values(recipe: Path) -> None:
    (recipe.parent / "opts.conf").write_text("nj=9\n")
    out = sh(["bash", str(recipe), "--config", "opts.conf", "--help"], recipe.parent)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Usage: ")
    assert re.search(r"--nj\s+9$", out.stdout, re.M)
    assert re.search(r"--exp-dir\s+exp/x$", out.stdout, re.M)
    assert "stage=" not in out.stdout  # --help exits before the script goes on


def footer_code(log: Path) -> int | None:
    m = re.search(r"^# Ended \(code (\d+)\) at .*, elapsed time \d+ seconds$", log.read_text(), re.M)
    return int(m.group(1)) if m else None


def test_run_substitutes_job_in_args_and_log_names(tmp_path: Path) -> None:
    out = sh([RUN, "JOB=1:3", "log/x.JOB.log", "echo", "task", "JOB", "out/JOB.txt"], tmp_path)
    assert out.returncode == 0, out.stderr
    for j in (1, 2, 3):
        lines = (tmp_path / f"log/x.{j}.log").read_text().splitlines()
        assert lines[0] == f"# echo task {j} out/{j}.txt"
        assert lines[1].startswith("# Running on ")
        assert lines[2].startswith("# Started at ")
        assert lines[3] == "#"
        assert lines[4] == f"task {j} out/{j}.txt"
        assert re.fullmatch(r"# Accounting: time=\d+ threads=1", lines[5])
        assert lines[6].startswith("# Ended (code 0) at ")
    assert not (tmp_path / "log/x.JOB.log").exists()


def test_run_single_job_form_and_shell_operators(tmp_path: Path) -> None:
    # An argument without whitespace goes to bash as it is: \| is a pipe.
    out = sh([RUN, "log/one.log", "echo", "hello world", "|", "tr", "a-z", "A-Z"], tmp_path)
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "log/one.log").read_text()
    assert "\nHELLO WORLD\n" in text
    assert footer_code(tmp_path / "log/one.log") == 0


def stamps(tmp_path: Path, n: int) -> list[tuple[float, float]]:
    return sorted((float((tmp_path / f"t/{j}.start").read_text()),
                   float((tmp_path / f"t/{j}.end").read_text())) for j in range(1, n + 1))


STAMP_JOB = "date +%s.%N > t/JOB.start; sleep {s}; date +%s.%N > t/JOB.end"


def test_run_max_jobs_run_1_runs_jobs_one_after_another(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    out = sh([RUN, "--max-jobs-run", "1", "JOB=1:3", "log/s.JOB.log",
              "bash", "-c", STAMP_JOB.format(s=0.3)], tmp_path)
    assert out.returncode == 0, out.stderr
    spans = stamps(tmp_path, 3)
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start


def test_run_runs_jobs_in_parallel(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    out = sh([RUN, "--max-jobs-run", "3", "JOB=1:3", "log/p.JOB.log",
              "bash", "-c", STAMP_JOB.format(s=2)], tmp_path)
    assert out.returncode == 0, out.stderr
    spans = stamps(tmp_path, 3)
    # Each job sleeps 2 s: all three had started before the first one ended.
    assert max(s for s, _ in spans) < min(e for _, e in spans)


def test_run_failed_job_fails_the_run_and_is_named(tmp_path: Path) -> None:
    out = sh([RUN, "JOB=1:3", "log/f.JOB.log", "bash", "-c", "echo job JOB; exit $((JOB == 2 ? 3 : 0))"],
             tmp_path)
    assert out.returncode != 0
    assert "job 2 failed (exit code 3), log: log/f.2.log" in out.stderr
    assert "1 / 3 jobs failed" in out.stderr
    assert "f.1.log" not in out.stderr and "f.3.log" not in out.stderr
    assert [footer_code(tmp_path / f"log/f.{j}.log") for j in (1, 2, 3)] == [0, 3, 0]
    for j in (1, 3):
        assert f"\njob {j}\n" in (tmp_path / f"log/f.{j}.log").read_text()


def test_run_accepts_cluster_resource_options(tmp_path: Path) -> None:
    out = sh([RUN, "--gpu", "1", "--mem", "4G", "--time=1:00:00", "--partition", "gpu",
              "--extra", "--exclusive", "--num-threads", "2", "log/r.log", "true"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "threads=2" in (tmp_path / "log/r.log").read_text()


@pytest.mark.parametrize("args, message", [
    (["--bogus", "1", "log/x.log", "true"], "unknown option --bogus"),
    (["JOB=1:2", "log/x.log", "true"], "must contain JOB"),
    (["--max-jobs-run", "0", "log/x.log", "true"], "positive integer"),
])
def test_run_rejects_bad_usage(tmp_path: Path, args: list[str], message: str) -> None:
    out = sh([RUN, *args], tmp_path)
    assert out.returncode != 0
    assert message in out.stderr


def test_run_help() -> None:
    out = subprocess.run([RUN, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    assert "JOB=1:N" in out.stdout and "--max-jobs-run" in out.stdout


def test_run_sigterm_stops_running_jobs(tmp_path: Path) -> None:
    proc = subprocess.Popen([RUN, "JOB=1:2", "log/k.JOB.log", "sleep", "60", "|", "cat"],
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    logs = [tmp_path / f"log/k.{j}.log" for j in (1, 2)]
    deadline = time.monotonic() + 30
    while not all(log.exists() for log in logs) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "interrupted" in err
    # Each job's whole process group was ended, and its footer still written.
    assert [footer_code(log) for log in logs] == [143, 143]
