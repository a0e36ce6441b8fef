"""The ``kdasr`` command group. Each subcommand family lives in its own module.

Subcommand modules are thin: they parse options and call one library function.
"""
from __future__ import annotations

import importlib

import click

from kdasr import __version__
from kdasr.cli.common import one_line
from kdasr.errors import KdasrError
from kdasr.utils.logging import setup_logging

# (module, attribute) of each top-level command, in the order --help lists them.
COMMANDS = [
    ("kdasr.cli.prepare", "prepare"),
    ("kdasr.cli.plan", "plan"),
    ("kdasr.cli.train", "train"),
    ("kdasr.cli.train", "average"),
    ("kdasr.cli.softlabels", "soft_labels"),
    ("kdasr.cli.archive", "archive"),
    ("kdasr.cli.graph", "graph"),
    ("kdasr.cli.decode", "decode"),
    ("kdasr.cli.report", "report"),
    ("kdasr.cli.score", "score"),
    ("kdasr.cli.lm", "lm"),
    ("kdasr.cli.lm", "rescore"),
    ("kdasr.cli.model_info", "model_info"),
    ("kdasr.cli.export", "export"),
    ("kdasr.cli.transcribe", "transcribe"),
]


class _Group(click.Group):
    """Prints a user's mistake (KdasrError) as click's one line ``Error: ...`` (exit 1);
    ``kdasr -v`` shows the traceback instead."""

    def invoke(self, ctx: click.Context) -> None:
        with one_line(KdasrError):
            return super().invoke(ctx)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="kdasr")
@click.option("-v", "--verbose", count=True, help="More log output (debug level).")
def cli(verbose: int) -> None:
    """kdasr: knowledge distillation for CTC speech acoustic models.

    Stages read and write lhotse manifests and plain files; run them from
    egs/<corpus>/run.sh or one by one.
    """
    setup_logging(verbose)


for _module, _attr in COMMANDS:
    cli.add_command(getattr(importlib.import_module(_module), _attr))
