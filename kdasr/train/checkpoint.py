"""Checkpoints: everything needed to rebuild a model, and to resume training exactly.

A checkpoint is one ``torch.save`` dict written atomically (temp file +
rename): a killed job leaves either the previous checkpoint or the new one.
"""
from __future__ import annotations

import io
import logging
import random
import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from kdasr.models.checkpoint import load_checkpoint
from kdasr.utils.io import Pathlike, atomic_path

CHECKPOINT_RE = re.compile(r"^(?:checkpoint|epoch)-(\d+)\.pt$")


def save_checkpoint(path: Pathlike, state: dict) -> None:
    # Serialized in memory, written by Python: torch's own file writer reports a full disk as
    # "unexpected pos" or "iostream error" and loses the errno, which names the cause.
    buf = io.BytesIO()
    torch.save(state, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getbuffer())


def rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(exp_dir: Pathlike, prefix: str = "checkpoint") -> list[Path]:
    """Checkpoints named ``<prefix>-N.pt`` under ``exp_dir`` (and its checkpoints/), by N."""
    exp_dir = Path(exp_dir)
    found = []
    for d in (exp_dir, exp_dir / "checkpoints"):
        for p in d.glob(f"{prefix}-*.pt"):
            m = CHECKPOINT_RE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(exp_dir: Pathlike) -> Optional[Path]:
    """The checkpoint with the most training steps, epoch-end or periodic."""
    best: Optional[tuple[int, int, Path]] = None
    for p in list_checkpoints(exp_dir, "checkpoint") + list_checkpoints(exp_dir, "epoch"):
        ckpt = torch.load(p, map_location="cpu", weights_only=False)
        key = (ckpt["step"], 1 if ckpt.get("epoch_done") else 0, p)
        if best is None or key[:2] > best[:2]:
            best = key
    return None if best is None else best[2]


def average_checkpoints(paths: Sequence[Pathlike]) -> dict:
    """Average model weights of ``paths``; the result is a checkpoint of the last one.

    Integer buffers (BatchNorm's ``num_batches_tracked``) are taken from the
    last checkpoint: averaging counters is meaningless.
    """
    if not paths:
        raise ValueError("no checkpoints to average")
    ckpts = [load_checkpoint(p) for p in paths]
    shapes = {k: v.shape for k, v in ckpts[0]["model"].items()}
    for p, c in zip(paths, ckpts):
        if {k: v.shape for k, v in c["model"].items()} != shapes:
            raise ValueError(f"checkpoint {p} holds a different network than {paths[0]}")
    avg = {}
    for k, v in ckpts[-1]["model"].items():
        if v.is_floating_point():
            avg[k] = sum(c["model"][k].double() for c in ckpts).div(len(ckpts)).to(v.dtype)
        else:
            avg[k] = v.clone()
    out = {k: v for k, v in ckpts[-1].items() if k not in ("optimizer", "scheduler", "sampler", "rng")}
    out["model"] = avg
    out["averaged_from"] = [str(p) for p in paths]
    logging.info("averaged %d checkpoints: %s", len(paths), ", ".join(Path(p).name for p in paths))
    return out


def average_epochs(exp_dir: Pathlike, epoch: Optional[int], avg: int, out: Optional[Pathlike] = None) -> Path:
    """Average ``epoch-(epoch-avg+1)..epoch`` into one checkpoint; return its path."""
    exp_dir = Path(exp_dir)
    epochs = {int(CHECKPOINT_RE.match(p.name).group(1)): p for p in list_checkpoints(exp_dir, "epoch")}
    if not epochs:
        raise FileNotFoundError(f"no epoch-N.pt checkpoints in {exp_dir}")
    last = max(epochs) if epoch is None else epoch
    wanted = list(range(max(1, last - avg + 1), last + 1))
    missing = [e for e in wanted if e not in epochs]
    if missing:
        raise FileNotFoundError(f"{exp_dir}: epoch checkpoints {missing} are missing (have {sorted(epochs)})")
    out = Path(out) if out is not None else exp_dir / f"avg-{last}-{len(wanted)}.pt"
    save_checkpoint(out, average_checkpoints([epochs[e] for e in wanted]))
    return out
