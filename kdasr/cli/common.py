"""Options and helpers shared by the subcommand modules."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from kdasr.utils.logging import setup_logging


def job_options(f: Callable) -> Callable:
    """``--job J --num-jobs N`` for stages that a ``$cmd JOB=1:N`` runner splits."""
    f = click.option("--num-jobs", type=int, default=1, help="Total number of split jobs.")(f)
    f = click.option("--job", type=int, default=1, help="This job's index, 1-based (JOB in run.pl style).")(f)
    return f


def check_job(job: int, num_jobs: int) -> None:
    if num_jobs < 1 or not 1 <= job <= num_jobs:
        raise click.BadParameter(f"--job {job} must lie in 1..--num-jobs ({num_jobs})")


def log_to(output_dir: Path, name: str) -> Path:
    """Add a log file ``<output_dir>/log/<name>.log`` to the running logger."""
    path = Path(output_dir) / "log" / f"{name}.log"
    setup_logging(click.get_current_context().find_root().params.get("verbose", 0) or 0, path)
    return path
