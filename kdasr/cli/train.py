"""``kdasr train`` and ``kdasr average``."""
from __future__ import annotations

from pathlib import Path

import click

from kdasr.config import load_config


@click.command()
@click.argument("configs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--exp-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where checkpoints, logs, tensorboard and the resolved config go.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set train.lr=5e-4 (repeatable).")
@click.option("--resume/--no-resume", default=True,
              help="Continue from the latest checkpoint in --exp-dir if there is one.")
@click.option("--allow-config-change", "allow", multiple=True, metavar="KEY",
              help="On resume, accept a changed value of KEY (dotted key or section; repeatable). "
                   "train.epochs, max_steps, early_stop_patience and the logging/saving keys are accepted always.")
def train(configs: tuple[Path, ...], exp_dir: Path, overrides: tuple[str, ...], resume: bool,
          allow: tuple[str, ...]) -> None:
    """Train a model (teacher or student) with CTC, optionally with knowledge distillation.

    CONFIGS are YAML files merged in order (later ones win) with data, model,
    train (and kd) sections, e.g. conf/train.yaml conf/model_cnn.yaml. Under
    torchrun every rank runs this same command (DDP; gloo on CPU, nccl on GPU).
    A second run on the same --exp-dir stops at once, naming the PID that holds it;
    a resumed run refuses a config that changes it (see --allow-config-change).
    """
    from kdasr.train.build import train_from_config

    train_from_config(load_config(configs, overrides), exp_dir, resume=resume, allow_config_change=allow)


@click.command()
@click.option("--exp-dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--epoch", type=int, default=None, help="Last epoch to include (default: the last one saved).")
@click.option("--avg", type=int, default=3, help="Number of epoch checkpoints to average.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Output checkpoint (default: EXP_DIR/avg-<epoch>-<avg>.pt).")
def average(exp_dir: Path, epoch: int | None, avg: int, out: Path | None) -> None:
    """Average the weights of the last AVG epoch checkpoints."""
    from kdasr.train.checkpoint import average_epochs

    path = average_epochs(exp_dir, epoch, avg, out)
    click.echo(str(path))
