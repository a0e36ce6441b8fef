"""The one training loop of kdasr: teachers, students and every KD strategy use it.

What the loop owns: the lhotse sampler, the optimizer and warm-up schedule,
gradient clipping, AMP on GPU, the NaN/inf guard, validation, early stopping,
checkpoints that resume exactly (sampler position and RNG state included),
tensorboard scalars and DDP under torchrun. What a loss is comes from an
``Objective`` (hard-label CTC in kdasr.ctc, knowledge distillation in kdasr.distill).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
import yaml
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from kdasr.config import check_config, deep_merge
from kdasr.ctc import CtcObjective, Objective, ctc_loss_hard, greedy_search
from kdasr.data.augment import AUGMENT_DEFAULTS, Augmenter, only_speeds
from kdasr.data.dataset import AsrDataset
from kdasr.data.features import load_cmvn
from kdasr.data.subsets import hold_back_transcripts
from kdasr.data.tokenizer import Tokenizer
from kdasr.data.validate import cut_text, filter_ctc_feasible, format_report, num_problems
from kdasr.models import build_model, check_model_config
from kdasr.models.checkpoint import load_checkpoint
from kdasr.models.inference import iter_model_outputs
from kdasr.score.wer import compute_wer
from kdasr.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from kdasr.train.progress import StepLog, Stopwatch
from kdasr.utils.io import atomic_write_text
from kdasr.utils.logging import setup_logging

DEFAULTS: dict = {
    "data": {
        "train_cuts": None,
        "dev_cuts": None,
        "lang_dir": None,
        "cmvn": None,
        "max_duration": 120.0,
        "num_buckets": 10,
        "num_workers": 0,
        # < 1: keep the transcripts of only this fraction of the training cuts (by cut id);
        # the rest are dropped, or under KD taught by the soft labels alone.
        "transcribed_fraction": 1.0,
        "transcribed_seed": 0,
        # train on these speed copies only (`kdasr prepare speed`; 1.0: the original cuts); None: on every cut
        "speeds": None,
        # volume, noise, reverb, specaugment: see kdasr.data.augment
        "augment": AUGMENT_DEFAULTS,
    },
    "model": {"name": "cnn"},
    "train": {
        "seed": 42,
        "epochs": 20,
        "max_steps": 0,
        "lr": 1.0e-3,
        "weight_decay": 1.0e-2,
        "warmup_steps": 300,
        # also scale the rate down linearly over the epochs, to 1/epochs in the last one
        "lr_anneal": False,
        "grad_clip": 5.0,
        "amp": True,
        "device": "auto",
        "save_every_n": 200,
        "keep_last_n": 3,
        "early_stop_patience": 5,
        "log_every_n": 20,
    },
}


# DEFAULTS is the schema of a training config. ``model`` and ``kd`` are checked where they are
# read (build_model, KDTargets); ``view`` and ``role`` are recipe metadata; paths default to None.
SCHEMA: dict = {**DEFAULTS, "model": None, "kd": None, "view": None, "role": None}
TYPES = {"data.train_cuts": str, "data.dev_cuts": str, "data.lang_dir": str, "data.cmvn": str, "data.speeds": list,
         "view": str, "role": str}
REQUIRED = ("data.train_cuts", "data.lang_dir")


def resolve_config(cfg: dict) -> dict:
    """``cfg`` over the defaults, refusing unknown keys, values of the wrong type and missing paths:
    a typo must not train with the default in its place."""
    cfg = deep_merge(DEFAULTS, cfg)
    check_config(cfg, SCHEMA, TYPES, REQUIRED)
    check_model_config(cfg["model"])
    return cfg


def warmup_schedule(
    warmup_steps: int, anneal_epochs: int = 0, epoch: Callable[[], int] = lambda: 1
) -> Callable[[int], float]:
    """Linear warm-up, then inverse square-root decay (Noam): needs no total step count,
    which a dynamic-bucketing sampler cannot tell in advance.

    With ``anneal_epochs`` = E > 0 the rate is also scaled by 1 - (e - 1) / E in epoch e
    (read from ``epoch()`` at each step, so a resumed run replays it): Noam alone still
    leaves a quarter of the peak rate after a short run, and the dev WER then jumps
    from epoch to epoch instead of settling."""
    w = max(1, warmup_steps)

    def factor(step: int) -> float:
        s = step + 1
        noam = min(s / w, math.sqrt(w / s))
        if anneal_epochs <= 0:
            return noam
        return noam * max(1.0 - (epoch() - 1) / anneal_epochs, 1.0 / anneal_epochs)

    return factor


@dataclass
class TrainState:
    epoch: int = 1
    step: int = 0
    epoch_done: bool = False
    best_metric: float = float("inf")
    best_epoch: int = 0
    best_dev_loss: float = float("inf")
    bad_epochs: int = 0
    train_seconds: float = 0.0
    history: list = field(default_factory=list)


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Train one model described by a resolved config into ``exp_dir``."""

    def __init__(self, cfg: dict, exp_dir: Path, objective: Optional[Objective] = None) -> None:
        self.cfg = resolve_config(cfg)
        self.exp_dir = Path(exp_dir)
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        tcfg, dcfg = self.cfg["train"], self.cfg["data"]
        self.device = _resolve_device(tcfg["device"], self.local_rank)
        if self.world_size > 1 and not dist.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend)
        self.is_main = self.rank == 0
        setup_logging(0, self.exp_dir / "log" / ("train.log" if self.is_main else f"train.rank{self.rank}.log"))
        seed_everything(tcfg["seed"])
        self.tokenizer = Tokenizer.from_dir(dcfg["lang_dir"])
        # KD students may learn untranscribed cuts from soft labels alone.
        self.train_cuts = self._trainable(dcfg["train_cuts"], "train", keep_untranscribed=bool(self.cfg.get("kd")))
        self.dev_cuts = self._trainable(dcfg["dev_cuts"], "dev") if dcfg.get("dev_cuts") else None
        first = next(iter(self.train_cuts))
        if not first.has_features:
            raise ValueError(f"cut {first.id} in {dcfg['train_cuts']} has no features: run `kdasr prepare fbank` first")
        self.num_features = first.num_features
        # audio per rank and epoch, for the ETA of the step log lines
        self.epoch_seconds = sum(c.duration for c in self.train_cuts) / self.world_size
        self.sampling_rate = first.features.sampling_rate  # exports set up the deployment's fbank from it
        cmvn = load_cmvn(dcfg["cmvn"]) if dcfg.get("cmvn") else None
        self.model = build_model(self.cfg["model"], self.num_features, self.tokenizer.vocab_size, cmvn).to(self.device)
        self.objective: Objective = objective if objective is not None else CtcObjective()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=tcfg["lr"], weight_decay=tcfg["weight_decay"]
        )
        self.state = TrainState()  # before the scheduler, whose annealing reads the epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_schedule(
            tcfg["warmup_steps"], tcfg["epochs"] if tcfg["lr_anneal"] else 0, lambda: self.state.epoch,
        ))
        # The filtered cuts are in memory already; lhotse's lazy-reading advice does not apply.
        warnings.filterwarnings("ignore", "You are using DynamicBucketingSampler with an eagerly")
        self.sampler = DynamicBucketingSampler(
            self.train_cuts,
            max_duration=dcfg["max_duration"],
            num_buckets=dcfg["num_buckets"],
            shuffle=True,
            drop_last=False,
            seed=tcfg["seed"],
            world_size=self.world_size,
            rank=self.rank,
        )
        self.augment = Augmenter(dcfg["augment"], first.sampling_rate, seed=tcfg["seed"])
        if self.is_main:
            logging.info("augmentation: %s", ", ".join(self.augment.active) or "none")
        # online teachers of another view (a broadband teacher of a narrowband student) read that view's
        # features of each batch, augmented with the same draws (or, kd.teacher_input clean, only warped alike)
        views = {key: (v.cuts, self.augment.view(next(iter(v.cuts.values())).sampling_rate, clean=v.clean))
                 for key, v in (getattr(self.objective, "views", None) or {}).items()}
        self.dataset = AsrDataset(self.tokenizer, self.augment, views)
        self.ddp_model: torch.nn.Module = self.model
        if self.world_size > 1:
            self.ddp_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.local_rank] if self.device.type == "cuda" else None
            )
        self.amp = bool(tcfg["amp"]) and self.device.type == "cuda"
        self.tb: Optional[SummaryWriter] = None
        self.resumed_mid_epoch = False
        self._stopwatch = Stopwatch()

    def _trainable(self, path: str, part: str, keep_untranscribed: bool = False) -> CutSet:
        """The cuts of ``path`` CTC can use; the dropped ones are logged and listed by id in
        ``<exp_dir>/log/filtered_<part>.yaml`` instead of failing (or vanishing) mid-epoch."""
        cuts = CutSet.from_file(path)
        fraction = float(self.cfg["data"]["transcribed_fraction"])
        if part == "train" and fraction < 1.0:
            cuts = hold_back_transcripts(cuts, fraction, int(self.cfg["data"]["transcribed_seed"]))
        if part == "train" and self.cfg["data"]["speeds"] is not None:
            cuts = only_speeds(cuts, self.cfg["data"]["speeds"], path)
        cuts, report = filter_ctc_feasible(cuts, self.tokenizer, keep_untranscribed=keep_untranscribed)
        if report.get("untranscribed") and self.is_main:
            logging.info("%s: %d of %d cuts have no transcript; only the KD term teaches them",
                         part, report["untranscribed"], report["total"])
        if num_problems(report) and self.is_main:
            logging.warning("%s", format_report(report, title=f"{part} cuts {path}"))
            atomic_write_text(self.exp_dir / "log" / f"filtered_{part}.yaml", yaml.safe_dump(report, sort_keys=False))
        if len(cuts) == 0:
            raise ValueError(f"no usable {part} cuts left in {path} after the CTC filter (see the log)")
        return cuts

    # ----------------------------------------------------------------- state
    def checkpoint_state(self) -> dict:
        self.state.train_seconds += self._stopwatch.lap()
        return {
            "model": self.model.state_dict(),
            "model_cfg": self.cfg["model"],
            "num_features": self.num_features,
            "sampling_rate": self.sampling_rate,
            "vocab_size": self.tokenizer.vocab_size,
            "lang_hash": self.tokenizer.hash,
            "frame_shift": self.model.frame_shift,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "objective": self.objective.state_dict(),
            "rng": rng_state(),
            "epoch": self.state.epoch,
            "step": self.state.step,
            "epoch_done": self.state.epoch_done,
            "train_state": vars(self.state).copy(),
            "config": self.cfg,
        }

    def resume(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        if ckpt["lang_hash"] != self.tokenizer.hash:
            raise ValueError(f"checkpoint {path} was trained with another token set than {self.cfg['data']['lang_dir']}")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.objective.load_state_dict(ckpt.get("objective", {}))
        self.state = TrainState(**ckpt["train_state"])
        if self.state.epoch_done:
            self.state.epoch += 1
            self.state.epoch_done = False
        else:
            self.sampler.load_state_dict(ckpt["sampler"])
            self.resumed_mid_epoch = True
        set_rng_state(ckpt["rng"])
        logging.info("resumed from %s at epoch %d step %d", path, self.state.epoch, self.state.step)

    def save(self, name: str) -> Path:
        path = self.exp_dir / name
        if self.is_main:
            save_checkpoint(path, self.checkpoint_state())
        return path

    def _prune_periodic(self) -> None:
        keep = self.cfg["train"]["keep_last_n"]
        for p in list_checkpoints(self.exp_dir, "checkpoint")[:-keep] if keep > 0 else []:
            p.unlink()

    # ------------------------------------------------------------------ loop
    def _to_device(self, batch: dict) -> dict:
        batch = dict(batch)
        batch["features"] = batch["features"].to(self.device, non_blocking=True)
        batch["feature_lens"] = batch["feature_lens"].to(self.device)
        if "views" in batch:
            batch["views"] = {k: (f.to(self.device, non_blocking=True), n.to(self.device))
                              for k, (f, n) in batch["views"].items()}
        return batch

    def _grads_finite(self) -> bool:
        """After DDP's all-reduce every rank holds the same gradients, so a NaN on any
        rank is seen by all and all skip the step together without extra collectives."""
        return all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in self.model.parameters())

    def train_step(self, batch: dict) -> Optional[dict]:
        """One optimizer step; returns the loss stats, or None when the batch was skipped."""
        self.ddp_model.train()
        batch = self._to_device(batch)
        # The forward pass updates BatchNorm statistics before the loss can be checked:
        # a skipped batch puts them back, or its NaN would reach every later checkpoint.
        buffers = [b.detach().clone() for b in self.model.buffers()]
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else contextlib.nullcontext()
        )
        with autocast:
            loss, stats = self.objective(self.ddp_model, batch, self.state.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if not torch.isfinite(loss.detach()) or not self._grads_finite():
            logging.warning(
                "step %d: non-finite loss %s, batch skipped; cuts: %s",
                self.state.step, float(loss.detach()), " ".join(batch["cut_ids"]),
            )
            self.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for b, saved in zip(self.model.buffers(), buffers):
                    b.copy_(saved)
            return None
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg["train"]["grad_clip"])
        self.optimizer.step()
        self.scheduler.step()
        out = {k: float(v) for k, v in stats.items()}
        out["loss"] = float(loss.detach())
        out["grad_norm"] = float(grad_norm)
        return out

    def validate(self) -> dict:
        """Dev CTC loss and greedy WER (the early-stopping metric)."""
        assert self.dev_cuts is not None
        self.model.eval()
        tot_loss, n, refs, hyps = 0.0, 0, {}, {}
        for out in iter_model_outputs(self.model, self.dev_cuts, self.device, self.cfg["data"]["max_duration"]):
            texts = [cut_text(c) for c in out.cuts]
            loss = ctc_loss_hard(out.log_probs, out.lens, [self.tokenizer.encode(t) for t in texts])
            b = len(out.cuts)
            tot_loss += float(loss) * b
            n += b
            for cid, text, ids in zip(out.cut_ids, texts, greedy_search(out.log_probs, out.lens)):
                refs[cid] = text.split()
                hyps[cid] = self.tokenizer.decode(ids).split()
        stats = compute_wer(refs, hyps)
        return {"dev_loss": tot_loss / max(n, 1), "dev_wer": stats.wer}

    def _end_epoch(self, epoch_stats: dict) -> bool:
        """Validate, save the epoch checkpoint and best.pt; return True to stop early."""
        tcfg = self.cfg["train"]
        if self.dev_cuts is not None and self.is_main:
            epoch_stats.update(self.validate())
        metric = epoch_stats.get("dev_wer", epoch_stats.get("train_loss", float("inf")))
        self.state.history.append({"epoch": self.state.epoch, **epoch_stats})
        improved = metric < self.state.best_metric
        if improved:
            self.state.best_metric, self.state.best_epoch = metric, self.state.epoch
        # Patience runs out only when neither WER nor dev loss improves: on the all-blank CTC
        # plateau WER sits at 100% for epochs while the loss still falls.
        loss_improved = epoch_stats.get("dev_loss", float("inf")) < self.state.best_dev_loss
        if loss_improved:
            self.state.best_dev_loss = epoch_stats["dev_loss"]
        self.state.bad_epochs = 0 if improved or loss_improved else self.state.bad_epochs + 1
        self.state.epoch_done = True
        logging.info(
            "epoch %d: %s%s", self.state.epoch,
            ", ".join(f"{k} {v:.4g}" for k, v in epoch_stats.items()), " (best)" if improved else "",
        )
        if self.tb is not None:
            for k, v in epoch_stats.items():
                self.tb.add_scalar(f"epoch/{k}", v, self.state.epoch)
        self.save(f"epoch-{self.state.epoch}.pt")
        if improved and self.is_main:
            save_checkpoint(self.exp_dir / "best.pt", self.checkpoint_state())
        patience = tcfg["early_stop_patience"]
        stop = bool(patience) and self.state.bad_epochs >= patience
        if self.world_size > 1:  # rank 0 alone validated: its decision holds for all
            decision = [stop, vars(self.state).copy()]
            dist.broadcast_object_list(decision, src=0)
            stop, self.state = decision[0], TrainState(**decision[1])
        return stop

    def fit(self, resume: bool = True) -> TrainState:
        tcfg = self.cfg["train"]
        if self.is_main:
            self.tb = SummaryWriter(str(self.exp_dir / "tensorboard"))
        if resume:
            path = latest_checkpoint(self.exp_dir)
            if path is not None:
                self.resume(path)
        self._stopwatch.restart()
        logging.info(
            "model %s: %.2fM parameters, device %s, world size %d",
            self.cfg["model"]["name"], self.model.num_params() / 1e6, self.device, self.world_size,
        )
        max_steps = tcfg["max_steps"] or None
        stop = False
        t_start = time.time()
        while self.state.epoch <= tcfg["epochs"] and not stop:
            if not self.resumed_mid_epoch:
                self.sampler.set_epoch(self.state.epoch)
            self.augment.set_epoch(self.state.epoch)
            self.resumed_mid_epoch = False
            # The loader draws a base seed when iterated; its own generator keeps that draw
            # out of the global RNG stream, which a resumed run must replay exactly.
            loader = torch.utils.data.DataLoader(
                self.dataset, sampler=self.sampler, batch_size=None,
                num_workers=self.cfg["data"]["num_workers"],
                generator=torch.Generator().manual_seed(self.cfg["train"]["seed"] + self.state.epoch),
            )
            sums: dict[str, float] = {}
            n_ok = 0
            join = (
                torch.distributed.algorithms.join.Join([self.ddp_model])
                if self.world_size > 1 else contextlib.nullcontext()
            )
            # disable=None: no bar when stderr is not a terminal (log files get the StepLog lines instead).
            bar = tqdm(loader, desc=f"epoch {self.state.epoch}", disable=None if self.is_main else True, leave=False)
            step_log = StepLog(self.state.epoch, self.epoch_seconds, tcfg["log_every_n"])
            with join:
                for batch in bar:
                    self.state.step += 1
                    out = self.train_step(batch)
                    line = step_log.step(self.state.step, sum(c.duration for c in batch["cuts"]),
                                         None if out is None else out["loss"], self.scheduler.get_last_lr()[0])
                    if line and self.is_main:
                        logging.info("%s", line)
                    if out is not None:
                        n_ok += 1
                        for k, v in out.items():
                            sums[k] = sums.get(k, 0.0) + v
                        bar.set_postfix(loss=f"{out['loss']:.3f}")
                        if self.tb is not None and self.state.step % tcfg["log_every_n"] == 0:
                            for k, v in out.items():
                                self.tb.add_scalar(f"train/{k}", v, self.state.step)
                            self.tb.add_scalar("train/lr", self.scheduler.get_last_lr()[0], self.state.step)
                    if tcfg["save_every_n"] and self.state.step % tcfg["save_every_n"] == 0:
                        self.save(f"checkpoints/checkpoint-{self.state.step}.pt")
                        if self.is_main:
                            self._prune_periodic()
                    if max_steps and self.state.step >= max_steps:
                        stop = True
                        break
            epoch_stats = {f"train_{k}": v / max(n_ok, 1) for k, v in sums.items()}
            if stop:
                self.save(f"checkpoints/checkpoint-{self.state.step}.pt")
                break
            stop = self._end_epoch(epoch_stats)
            if self.world_size > 1:
                dist.barrier()
            if not stop:
                self.state.epoch += 1
                self.state.epoch_done = False
        self.state.train_seconds += self._stopwatch.lap()
        if self.world_size > 1:
            self.check_ranks_in_sync()
        if self.tb is not None:
            self.tb.close()
        if self.is_main:
            summary = {
                "steps": self.state.step,
                # Epochs completed: after the last one the loop has already moved the counter on.
                "epochs": self.state.epoch if self.state.epoch_done else self.state.epoch - 1,
                "best_epoch": self.state.best_epoch,
                "best_dev_wer": self.state.best_metric,
                "train_seconds": round(self.state.train_seconds, 1),
                "num_params": self.model.num_params(),
                "world_size": self.world_size,
                "device": str(self.device),
            }
            atomic_write_text(self.exp_dir / "train_summary.yaml", yaml.safe_dump(summary, sort_keys=False))
        logging.info(
            "training done: %d steps, %.1f s in this run (%.1f s in all); best epoch %d (%.4g)",
            self.state.step, time.time() - t_start, self.state.train_seconds,
            self.state.best_epoch, self.state.best_metric,
        )
        return self.state

    def check_ranks_in_sync(self) -> None:
        """All-gather a checksum of the weights; DDP ranks that drifted apart are a bug."""
        flat = torch.cat([p.detach().double().flatten() for p in self.model.parameters()])
        checksum = torch.tensor(
            [flat.sum().item(), (flat * flat).sum().item()], dtype=torch.float64, device=self.device
        )
        gathered = [torch.zeros_like(checksum) for _ in range(self.world_size)]
        dist.all_gather(gathered, checksum)
        if any(not torch.equal(g, gathered[0]) for g in gathered):
            raise RuntimeError(f"DDP ranks out of sync: weight checksums {[g.tolist() for g in gathered]}")
        logging.info("DDP ranks in sync: weight checksum %.10e over %d ranks", checksum[0].item(), self.world_size)

