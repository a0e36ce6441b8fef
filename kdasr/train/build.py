"""Choose the objective a config asks for and run the trainer."""
from __future__ import annotations

from pathlib import Path

from kdasr.train.trainer import TrainState, Trainer


def train_from_config(cfg: dict, exp_dir: Path, resume: bool = True) -> TrainState:
    """Hard-label CTC unless the config has a ``kd`` section."""
    trainer = Trainer(cfg, exp_dir)
    return trainer.fit(resume=resume)
