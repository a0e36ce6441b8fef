"""``kdasr prepare``: data preparation stages (import, demo, demo-lm, speed, narrowband, fbank, tokens, validate)."""
from __future__ import annotations

import importlib

import click

# (module, attribute) of each ``kdasr prepare`` subcommand.
SUBCOMMANDS: list[tuple[str, str]] = [
    ("kdasr.cli.prepare.importers", "import_"),
    ("kdasr.cli.prepare.demo", "demo"),
    ("kdasr.cli.prepare.speed", "speed"),
    ("kdasr.cli.prepare.demo_lm", "demo_lm"),
    ("kdasr.cli.prepare.narrowband", "narrowband"),
    ("kdasr.cli.prepare.validate", "validate"),
    ("kdasr.cli.prepare.fbank", "fbank"),
    ("kdasr.cli.prepare.tokens", "tokens"),
]


@click.group()
def prepare() -> None:
    """Prepare manifests, audio views, features and token sets."""


for _module, _attr in SUBCOMMANDS:
    prepare.add_command(getattr(importlib.import_module(_module), _attr))
