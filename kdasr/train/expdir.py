"""What keeps one experiment directory one run: an exclusive lock, and a resume that keeps its config.

Two ``kdasr train`` on one ``--exp-dir`` would resume from each other's
checkpoints and write the same files; a rerun with another config would
resume the old run under the new settings (or crash half-way) after
recording them as if they had been used. Both are refused here, before
anything in the directory is written.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import yaml

from kdasr.config import ConfigError, save_config, yaml_load
from kdasr.errors import KdasrError

LOCK_NAME = ".lock"
# Keys a resumed run may change without changing what it has learnt so far: how long it goes
# on, and what it logs and keeps. (train.epochs is not among them under lr_anneal, whose
# schedule depends on it.)
SAFE_ON_RESUME = (
    "train.epochs", "train.max_steps", "train.early_stop_patience",
    "train.log_every_n", "train.save_every_n", "train.keep_last_n",
)


class ExpDirBusy(KdasrError):
    """Another process trains into the same experiment directory."""


@contextlib.contextmanager
def exp_lock(exp_dir: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``exp_dir/.lock`` (the kernel drops it when the process dies).

    Only the process that writes the directory takes it: under torchrun that
    is rank 0, so the ranks of one job never lock each other out, and a
    second job stops at its rank 0 (torchrun then ends its other ranks).
    """
    exp_dir = Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    path = exp_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "a process that did not say its PID"
            raise ExpDirBusy(f"{exp_dir} is in use by another kdasr train: {holder} holds {path}; "
                             "wait for it to end or give another --exp-dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"PID {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                  .encode(), 0)
        yield
    finally:
        os.close(fd)


def _flatten(cfg: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_diff(old: Mapping, new: Mapping) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (old, new) for every leaf that differs; a missing side is None."""
    a, b = _flatten(old), _flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _show(value: Any) -> str:
    return "(absent)" if value is None else yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()\
        .removesuffix("...").strip()


def _allowed(key: str, allow: Sequence[str]) -> bool:
    return any(key == a or key.startswith(a + ".") for a in allow)


def check_resume_config(cfg: Mapping, saved_path: Path, allow: Sequence[str] = ()) -> dict[str, tuple[Any, Any]]:
    """Refuse to resume the run recorded in ``saved_path`` under a config that changes it.

    Keys in :data:`SAFE_ON_RESUME` and in ``allow`` (a dotted key or a whole
    section) may change; any other difference raises a ConfigError listing
    each key as ``old -> new``. Returns the allowed changes.
    """
    try:
        saved = yaml_load(saved_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read the config {saved_path} of the run to resume: {e}") from e
    diff = config_diff(saved, cfg)
    safe = [k for k in SAFE_ON_RESUME if not (k == "train.epochs" and (cfg.get("train") or {}).get("lr_anneal"))]
    refused = {k: d for k, d in diff.items() if not _allowed(k, list(safe) + list(allow))}
    if refused:
        changes = ", ".join(f"{k}: {_show(a)} -> {_show(b)}" for k, (a, b) in refused.items())
        raise ConfigError(
            f"{saved_path.parent} holds a run trained with another config; resuming would change {changes}. "
            "Use another --exp-dir, --no-resume to start over, or --allow-config-change KEY for a change "
            f"known to be safe (allowed already: {', '.join(safe)})")
    return diff


def start_or_resume(cfg: Mapping, exp_dir: Path, resume: bool, has_checkpoint: bool, allow: Sequence[str] = (),
                    write: bool = True) -> None:
    """Check a resumed run's config against ``exp_dir/config.yaml``, then (``write``) record ``cfg`` there."""
    path = Path(exp_dir) / "config.yaml"
    if resume and has_checkpoint and path.is_file():
        for key, (a, b) in check_resume_config(cfg, path, allow).items():
            logging.info("resuming with %s changed: %s -> %s", key, _show(a), _show(b))
    if write:
        save_config(cfg, path)
