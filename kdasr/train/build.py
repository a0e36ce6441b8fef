"""Choose the objective a config asks for and run the trainer.

Knowledge distillation with a ``kd`` section; otherwise the objective the
model declares (``AcousticModel.objective``): hard-label CTC, or per-head
CTC for the specialist ensemble. What a model reads besides the features
(the Oracle Teacher's transcript) it declares too, and the objectives ask it.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from lhotse import CutSet

from kdasr.ctc import CtcObjective, Objective
from kdasr.data.tokenizer import Tokenizer
from kdasr.distill.specialists import SpecialistObjective, resolve_subsets
from kdasr.distill.strategies import KDObjective, KDTargets
from kdasr.distill.teachers import check_augmentation_compatible
from kdasr.models import model_class
from kdasr.train.checkpoint import list_checkpoints
from kdasr.train.expdir import exp_lock, start_or_resume
from kdasr.train.trainer import Trainer, TrainState, resolve_config
from kdasr.utils.io import save_manifest


@dataclass(frozen=True)
class ObjectiveKind:
    """What a model's declared objective (``AcousticModel.objective``) brings when there is no ``kd`` section."""

    make: Callable[[], Objective]
    #: the ``model`` section as the checkpoint stores it (files it names resolved, so the checkpoint stands alone)
    resolve_model_config: Callable[[dict, Any, Any], dict] = lambda model_cfg, lang_dir, out_dir: dict(model_cfg)


OBJECTIVES: dict[str, ObjectiveKind] = {
    "ctc": ObjectiveKind(CtcObjective),
    # specialists' subsets may come from a YAML file of tokens or a generalist's archive: token ids in the checkpoint
    "specialist-heads": ObjectiveKind(SpecialistObjective, resolve_subsets),
}


def kd_objective(cfg: dict, exp_dir: Path) -> Optional[Objective]:
    """The KD objective of a resolved config with a ``kd`` section (None without one).

    Checks, before any training step, that augmentation keeps the teacher's
    frames and that every archive fits the student's cuts and token set.
    When the combine mode trains on other cuts (``multistream``: one copy of
    each cut per teacher) it rewrites ``cfg['data']['train_cuts']`` to a
    manifest of them in ``exp_dir``.
    """
    kd = cfg.get("kd")
    if not kd:
        return None
    check_augmentation_compatible(cfg)
    data = cfg["data"]
    tokenizer = Tokenizer.from_dir(data["lang_dir"])
    student_cuts = CutSet.from_file(data["train_cuts"]).to_eager()
    targets = KDTargets(kd, student_cuts, tokenizer.hash, tokenizer.vocab_size)
    train_cuts = targets.training_cuts(student_cuts)
    if train_cuts is not None:
        path = Path(exp_dir) / f"cuts_train_{targets.combine}.jsonl.gz"
        save_manifest(train_cuts, path)
        logging.info("%s: %d cuts -> %d training cuts in %s", targets.combine, len(student_cuts), len(train_cuts), path)
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
    kind = OBJECTIVES[model_class(cfg["model"]["name"]).objective]
    cfg["model"] = kind.resolve_model_config(cfg["model"], cfg["data"]["lang_dir"], exp_dir)
    objective = kd_objective(cfg, Path(exp_dir))
    if objective is None:
        objective = kind.make()
    return Trainer(cfg, exp_dir, objective).fit(resume=resume)
