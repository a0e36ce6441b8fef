"""Options and helpers shared by the subcommand modules."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable, Iterator, Optional

import click

from kdasr.utils.logging import log_to_files, setup_logging


def job_options(f: Callable) -> Callable:
    """``--job J --num-jobs N`` for stages that a ``$cmd JOB=1:N`` runner splits."""
    f = click.option("--num-jobs", type=int, default=1, help="Total number of split jobs.")(f)
    f = click.option("--job", type=int, default=1, help="This job's index, 1-based (JOB in run.pl style).")(f)
    return f


def check_job(job: int, num_jobs: int) -> None:
    if num_jobs < 1 or not 1 <= job <= num_jobs:
        raise click.BadParameter(f"--job {job} must lie in 1..--num-jobs ({num_jobs})")


def float_list(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[list[float]]:
    """Click callback: ``"0,0.5,1"`` -> ``[0.0, 0.5, 1.0]``; a bad or empty list names the option."""
    if value is None:
        return None
    try:
        out = [float(w) for w in value.split(",") if w.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None
    if not out:
        raise click.BadParameter("no values given")
    return out


def log_to(output_dir: Path, name: str) -> Path:
    """Add a log file ``<output_dir>/log/<name>.log`` to the running logger."""
    path = Path(output_dir) / "log" / f"{name}.log"
    setup_logging(click.get_current_context().find_root().params.get("verbose", 0) or 0, path)
    return path


@contextlib.contextmanager
def one_line(*types: type[BaseException]) -> Iterator[None]:
    """Print ``types`` raised inside as the one line ``Error: ...`` (exit 1) that a user's mistake gets.

    The run's log files record it too; ``kdasr -v`` keeps the traceback. The CLI group applies it to
    every :class:`~kdasr.errors.KdasrError`; a command names the builtin errors its library raises
    for bad input. Works as a decorator too.
    """
    try:
        yield
    except types as e:
        ctx = click.get_current_context(silent=True)
        if ctx is not None and ctx.find_root().params.get("verbose"):
            raise
        log_to_files(logging.ERROR, str(e))
        raise click.ClickException(str(e)) from e
