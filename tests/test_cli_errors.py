"""A user's mistake ends any subcommand the same way: one line on stderr, the same line in the run's
log file, exit status 1, and the traceback only with ``kdasr -v``."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
from click.testing import CliRunner

from kdasr.cli.common import log_to, one_line
from kdasr.cli.main import cli


def _kdasr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kdasr", *args], capture_output=True, text=True)


def test_library_error_is_one_line_and_logged(tmp_path: Path) -> None:
    """A KdasrError (here: merging a dir that holds no archive) is handled once, by the command group."""
    quiet = _kdasr("archive", "merge", str(tmp_path))
    expected = f"Error: {tmp_path / 'meta.yaml'} does not exist: not a soft-label archive, or its dump never started"
    assert quiet.returncode == 1 and quiet.stderr.strip().splitlines() == [expected]
    log = (tmp_path / "log" / "merge.log").read_text()
    assert expected.removeprefix("Error: ") in log and "ERROR" in log
    loud = _kdasr("-v", "archive", "merge", str(tmp_path))
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "ArchiveError" in loud.stderr


def test_one_line_turns_named_builtin_errors_into_one_line(tmp_path: Path) -> None:
    """A command names the builtin errors its library raises for bad input; others keep their traceback."""
    @cli.command("_raise", hidden=True)
    @click.argument("kind")
    def _raise(kind: str) -> None:
        log_to(tmp_path, "raise")
        with one_line(ValueError):
            raise ValueError("line 3 of x.txt: bad value") if kind == "value" else KeyError("a bug")

    try:
        value = CliRunner().invoke(cli, ["_raise", "value"])
        assert value.exit_code == 1 and value.output.strip() == "Error: line 3 of x.txt: bad value"
        assert "line 3 of x.txt: bad value" in (tmp_path / "log" / "raise.log").read_text()
        bug = CliRunner().invoke(cli, ["_raise", "key"])
        assert isinstance(bug.exception, KeyError)
        loud = CliRunner().invoke(cli, ["-v", "_raise", "value"])
        assert isinstance(loud.exception, ValueError)
    finally:
        cli.commands.pop("_raise")
