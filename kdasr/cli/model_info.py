"""``kdasr model-info``: size and cost of a model config before training it."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("model-info")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set model.hidden=256 (repeatable).")
@click.option("--num-features", type=int, default=80, help="Input feature dimension (fbank bins).")
@click.option("--vocab-size", type=int, default=30, help="Output tokens, blank included.")
def model_info(config: Path, overrides: tuple[str, ...], num_features: int, vocab_size: int) -> None:
    """Print the name, parameters, MACs per second of audio and output frame rate of CONFIG's model section."""
    from kdasr.config import load_config
    from kdasr.models import build_model, model_summary

    try:  # ConfigError is a ValueError too: a bad --set reads as a usage error, not a traceback
        cfg = load_config(config, overrides)
        if not isinstance(cfg.get("model"), dict):
            raise click.UsageError(f"{config} has no 'model:' section")
        model = build_model(cfg["model"], num_features, vocab_size)
    except ValueError as e:
        raise click.UsageError(str(e)) from e
    info = model_summary(model, num_features)
    click.echo(f"name: {info['name']}")
    click.echo("options: " + ", ".join(f"{k}={v}" for k, v in info["options"].items()))
    click.echo(f"parameters: {info['num_params']:,} ({info['num_params'] / 1e6:.2f} M)")
    click.echo(f"MACs per second of audio: {info['macs_per_second'] / 1e6:.1f} M")
    click.echo(f"output frame rate: {info['frame_rate']:g} Hz ({info['frame_shift'] * 1000:g} ms)")
