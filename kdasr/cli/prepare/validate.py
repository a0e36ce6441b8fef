"""``kdasr prepare validate``: check manifests against the kdasr contract; exit 1 on problems."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from kdasr.cli.common import log_to


@click.command("validate")
@click.option(
    "--manifest-dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=Path("data/manifests"), help="Directory with cuts_<part>.jsonl.gz.",
)
@click.option("--parts", default=None, help="Comma-separated parts; default: every cuts_*.jsonl.gz.")
@click.option(
    "--lang-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
    help="Also check that every transcript maps to tokens and fits CTC (data/lang_<kind>).",
)
@click.option("--read-data", is_flag=True, help="Also load every cut's audio/features (slow).")
@click.option("--max-ids", type=int, default=5, help="Ids listed per reason.")
def validate(
    manifest_dir: Path, parts: Optional[str], lang_dir: Optional[Path], read_data: bool, max_ids: int
) -> None:
    """Report problems by reason (counts and first ids) for each part."""
    from kdasr.data.validate import format_report, num_problems, validate_manifest_dir

    log_to(manifest_dir, "validate")
    tokenizer = None
    if lang_dir is not None:
        from kdasr.data.tokenizer import Tokenizer

        tokenizer = Tokenizer.from_dir(lang_dir)
    part_list = [p.strip() for p in parts.split(",") if p.strip()] if parts else None
    reports = validate_manifest_dir(manifest_dir, part_list, tokenizer=tokenizer, read_data=read_data)
    bad = 0
    for part, report in reports.items():
        click.echo(format_report(report, max_ids=max_ids, title=f"part {part}"))
        bad += num_problems(report)
    if bad:
        click.echo(f"{bad} problem(s) in {manifest_dir}", err=True)
        sys.exit(1)
    click.echo(f"all {len(reports)} part(s) in {manifest_dir} are valid")
