"""``kdasr plan``: the experiment plan of an experiments file (what the recipe shell runs)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from kdasr.plan import (
    DataLayout,
    default_shared,
    make_plan,
    to_json_lines,
    to_table,
    to_tsv,
    write_plan,
)


@click.command()
@click.argument("experiments", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--seeds", default="1", help="Seeds of the students, space-separated (several: name_seedN).")
@click.option("--exp-dir", default="exp", help="Where experiments live: exp/<name>/ (and exp/<name>/softlabels).")
@click.option("--data-dir", default="data", help="The recipe's data dir (fbank/ below it).")
@click.option("--train-part", default="train")
@click.option("--dev-part", default="dev")
@click.option("--lang-dir", default="data/lang_char", help="Token set the models are trained on.")
@click.option("--shared-configs", "shared", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where config paths not found in the current dir are looked up (repeatable; "
                   "default: the recipes/ dir of the kdasr checkout).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override added to every experiment, after its line's own (repeatable).")
@click.option("--format", "fmt", type=click.Choice(["table", "tsv", "json"]), default="table",
              help="table for people; tsv (a header, then one line each) or json lines for scripts.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write <out-dir>/<name>.yaml (each resolved config) and <out-dir>/plan.tsv.")
def plan(experiments: Path, seeds: str, exp_dir: str, data_dir: str, train_part: str, dev_part: str,
         lang_dir: str, shared: tuple[Path, ...], overrides: tuple[str, ...], fmt: str,
         out_dir: Optional[Path]) -> None:
    """Print who trains in which stage, on which view, reading whose archive or checkpoint.

    EXPERIMENTS lists one experiment a line: name role view config.yaml ...
    [key=value ...] (role teacher or student, view wb or nb). Stage 4 trains
    the teachers and whatever they read, stage 6 the other students; the
    recipe starts each one once the experiments it reads are trained.
    """
    try:
        seed_list = [int(s) for s in seeds.split()]
    except ValueError as e:
        raise click.BadParameter(f"seeds must be integers, got {seeds!r}", param_hint="--seeds") from e
    steps = make_plan(experiments, seed_list, exp_dir.rstrip("/") or ".",
                      DataLayout(data_dir, train_part, dev_part, lang_dir), overrides, shared or default_shared())
    if out_dir is not None:
        write_plan(steps, out_dir)
    click.echo({"table": to_table, "tsv": lambda s: to_tsv(s, out_dir), "json": to_json_lines}[fmt](steps), nl=False)
