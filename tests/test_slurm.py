"""tools/slurm.sh and tools/slurm_torchrun.sh on a real one-node Slurm cluster.

The session fixture uses the cluster tools/ci_slurm_setup.sh started (CI runs
it first) or starts one itself with it, and then stops the daemons it started.
Where Slurm is not installed or its daemons cannot start (no root, a container
without the privileges they need), the tests skip and say why.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
SLURM = str(TOOLS / "slurm.sh")
CLUSTER_DIR = Path("/tmp/kdasr-slurm")  # ci_slurm_setup.sh's default --dir
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


@pytest.fixture(scope="session")
def slurm_env() -> Iterator[dict[str, str]]:
    """Environment whose SLURM_CONF points at a running one-node cluster."""
    missing = [d for d in ("slurmctld", "slurmd", "sbatch", "munged") if not shutil.which(d, path=SBIN_PATH)]
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} not found); "
                    "tools/ci_slurm_setup.sh installs slurm-wlm and munge")
    env = {**os.environ, "PATH": SBIN_PATH, "SLURM_CONF": str(CLUSTER_DIR / "slurm.conf")}
    setup = ["bash", str(TOOLS / "ci_slurm_setup.sh"), "--no-install", "--dir", str(CLUSTER_DIR)]
    try:
        out = subprocess.run(setup, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        out = None
    if out is None or out.returncode != 0:
        subprocess.run([*setup, "--stop"], env=env, capture_output=True, timeout=60)
        why = "no answer within 120 s" if out is None else (out.stderr.strip() or out.stdout.strip())[-1500:]
        pytest.skip(f"cannot start a Slurm cluster here (tools/ci_slurm_setup.sh):\n{why}")
    if "already up" in out.stdout:
        yield env  # started before this session (CI's setup step): not ours to stop
        return
    try:
        yield env
    finally:
        subprocess.run([*setup, "--stop"], env=env, capture_output=True, timeout=60)


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=100)


def footer_code(log: Path) -> int | None:
    m = re.search(r"^# Ended \(code (\d+)\) at ", log.read_text(), re.M)
    return int(m.group(1)) if m else None


def test_array_job_writes_one_log_per_task(slurm_env: dict[str, str], tmp_path: Path) -> None:
    out = run([SLURM, "JOB=1:3", "log/x.JOB.log", "echo", "task", "JOB", "of", "data/split3/JOB"],
              tmp_path, slurm_env)
    assert out.returncode == 0, out.stderr
    for j in (1, 2, 3):
        log = tmp_path / f"log/x.{j}.log"
        lines = log.read_text().splitlines()
        assert lines[0] == f"# echo task {j} of data/split3/{j}"
        assert re.fullmatch(rf"# Running on \S+, Slurm job \d+ \(array job \d+, task {j}\)", lines[1])
        assert lines[2].startswith("# Started at ")
        assert f"task {j} of data/split3/{j}" in lines
        assert footer_code(log) == 0
    assert (tmp_path / "log/q/x.sh").is_file()


def test_failed_array_task_fails_the_job(slurm_env: dict[str, str], tmp_path: Path) -> None:
    out = run([SLURM, "--max-jobs-run", "2", "--gpu", "0", "JOB=1:3", "log/f.JOB.log",
               "bash", "-c", "echo task JOB; exit $((JOB == 2 ? 3 : 0))"], tmp_path, slurm_env)
    assert out.returncode == 1
    assert re.search(r"task 2 of array job \d+ failed \(exit code 3\b.*\), log: log/f\.2\.log", out.stderr)
    assert "f.1.log" not in out.stderr and "f.3.log" not in out.stderr
    assert "1 / 3 tasks" in out.stderr
    assert [footer_code(tmp_path / f"log/f.{j}.log") for j in (1, 2, 3)] == [0, 3, 0]


def test_single_job(slurm_env: dict[str, str], tmp_path: Path) -> None:
    out = run([SLURM, "log/one.log", "echo", "one", "|", "tr", "a-z", "A-Z"], tmp_path, slurm_env)
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "log/one.log").read_text()
    assert "\nONE\n" in text and re.search(r"^# Running on \S+, Slurm job \d+$", text, re.M)
    assert footer_code(tmp_path / "log/one.log") == 0


DDP_SCRIPT = """\
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
total = torch.tensor([dist.get_rank() + 1.0])
dist.all_reduce(total)
print(f"rank {dist.get_rank()} of {dist.get_world_size()}: sum {total.item():.0f}", flush=True)
dist.destroy_process_group()
"""


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_torchrun_job(slurm_env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "ddp.py").write_text(DDP_SCRIPT)
    out = run([str(TOOLS / "slurm_torchrun.sh"), "--gpu", "0", "--nproc-per-node", "2",
               "log/train.log", "ddp.py"], tmp_path, slurm_env)
    text = (tmp_path / "log/train.log").read_text()
    assert out.returncode == 0, out.stderr + text
    assert "1 node(s) x 2 process(es), rendezvous at " in text
    assert re.search(r"rank 0 of 2: sum 3", text) and re.search(r"rank 1 of 2: sum 3", text)
    assert footer_code(tmp_path / "log/train.log") == 0
