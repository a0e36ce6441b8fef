"""Reading a trained model back from a checkpoint (writing one is training's job: :mod:`kdasr.train.checkpoint`).

Decoding, export and the soft-label dump all rebuild a network from the
``model_cfg`` a checkpoint stores, so this sits with the models, below every
package that reads checkpoints.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kdasr.models import build_model
from kdasr.utils.io import Pathlike


def load_checkpoint(path: Pathlike, map_location: Any = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise RuntimeError(f"checkpoint {path} cannot be read (corrupt or truncated?): {e}") from e


def model_from_checkpoint(ckpt: dict, device: Any = "cpu") -> torch.nn.Module:
    """Rebuild the network described by a checkpoint and load its weights."""
    model = build_model(ckpt["model_cfg"], ckpt["num_features"], ckpt["vocab_size"])
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


def load_model(path: Pathlike, device: Any = "cpu") -> tuple[torch.nn.Module, dict]:
    ckpt = load_checkpoint(path)
    return model_from_checkpoint(ckpt, device), ckpt


def experiment_name(checkpoint: Pathlike) -> str:
    """The experiment directory's name, a teacher's default name: ``exp/vgg_wb/best.pt`` and
    ``exp/vgg_wb/checkpoints/checkpoint-5.pt`` give ``vgg_wb``."""
    parent = Path(checkpoint).absolute().parent
    if parent.name == "checkpoints":
        parent = parent.parent
    return parent.name
