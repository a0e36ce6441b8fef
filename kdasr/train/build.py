"""Choose the objective a config asks for and run the trainer.

Hard-label CTC by default; knowledge distillation with a ``kd`` section; the
specialist ensemble and the Oracle Teacher bring their own objectives
(per-head CTC, and CTC with the transcript as an input too).
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Optional, Sequence

from lhotse import CutSet

from kdasr.data.tokenizer import Tokenizer
from kdasr.distill.oracle import OracleObjective
from kdasr.distill.specialists import SpecialistObjective, resolve_subsets
from kdasr.distill.strategies import KDObjective, KDTargets, check_augmentation_compatible, multistream_cuts
from kdasr.train.checkpoint import list_checkpoints
from kdasr.train.expdir import exp_lock, start_or_resume
from kdasr.train.trainer import Objective, TrainState, Trainer, resolve_config
from kdasr.utils.io import save_manifest


def kd_objective(cfg: dict, exp_dir: Path) -> Optional[Objective]:
    """The KD objective of a resolved config with a ``kd`` section (None without one).

    Checks, before any training step, that augmentation keeps the teacher's
    frames and that every archive fits the student's cuts and token set.
    Under ``multistream`` it rewrites ``cfg['data']['train_cuts']`` to a
    manifest in ``exp_dir`` holding one copy of each cut per teacher.
    """
    kd = cfg.get("kd")
    if not kd:
        return None
    check_augmentation_compatible(cfg)
    data = cfg["data"]
    tokenizer = Tokenizer.from_dir(data["lang_dir"])
    student_cuts = CutSet.from_file(data["train_cuts"]).to_eager()
    targets = KDTargets(kd, student_cuts, tokenizer.hash, tokenizer.vocab_size)
    if targets.combine == "multistream":
        path = Path(exp_dir) / "cuts_train_multistream.jsonl.gz"
        save_manifest(multistream_cuts(student_cuts, targets.names), path)
        logging.info("multistream: %d cuts x %d teachers -> %s", len(student_cuts), len(targets.names), path)
        data["train_cuts"] = str(path)
    return KDObjective(targets)


def train_from_config(
    cfg: dict, exp_dir: Path, resume: bool = True, allow_config_change: Sequence[str] = ()
) -> TrainState:
    """Hard-label CTC, or knowledge distillation when the config has a ``kd`` section.

    Before anything is written into ``exp_dir``: the config is checked, the
    directory locked (by rank 0, the one process that writes it) and a resumed
    run's config compared with the one it was started with; ``config.yaml``
    then records the config as asked for, before the start-up rewrites below.
    """
    cfg = resolve_config(cfg)
    exp_dir = Path(exp_dir)
    is_main = int(os.environ.get("RANK", "0")) == 0
    with exp_lock(exp_dir) if is_main else contextlib.nullcontext():
        has_checkpoint = bool(list_checkpoints(exp_dir, "checkpoint") + list_checkpoints(exp_dir, "epoch"))
        start_or_resume(cfg, exp_dir, resume, has_checkpoint, allow_config_change, write=is_main)
        return _train(cfg, exp_dir, resume)


def _train(cfg: dict, exp_dir: Path, resume: bool) -> TrainState:
    name = cfg["model"]["name"]
    if name == "specialists":  # subsets from a YAML file become token ids, so the checkpoint stands alone
        cfg["model"] = resolve_subsets(cfg["model"], cfg["data"]["lang_dir"], exp_dir)
    objective = kd_objective(cfg, Path(exp_dir))
    if objective is None and name == "specialists":
        objective = SpecialistObjective()
    elif objective is None and name == "oracle":
        objective = OracleObjective()
    return Trainer(cfg, exp_dir, objective).fit(resume=resume)
