"""Train an LSTM LM on text, or distil teachers into one (``kdasr lm train|distill``).

Same conventions as the acoustic trainer (:mod:`kdasr.train.trainer`):
resolved ``config.yaml`` in the experiment dir, atomic checkpoints through
:mod:`kdasr.train.checkpoint` (``epoch-N.pt``, periodic
``checkpoints/checkpoint-STEP.pt``, ``best.pt`` by dev perplexity), exact
resume of a killed run (an epoch's batches are rebuilt from the seed and the
finished ones skipped; RNG restored), ``log/train.log``, tensorboard
scalars and ``train_summary.yaml``. Checkpoints carry the vocabulary, so an
LM stands alone for eval and rescoring.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
import torch.nn.functional as F
import yaml
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from kdasr.config import ConfigError, deep_merge, save_config
from kdasr.lm.data import PAD_ID, Vocab, collate, load_text, make_batches, read_lines
from kdasr.lm.losses import check_trust, lm_kd_loss
from kdasr.lm.model import build_lm
from kdasr.lm.score import load_lm, perplexity
from kdasr.models.checkpoint import load_checkpoint
from kdasr.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from kdasr.train.progress import Stopwatch
from kdasr.utils.io import atomic_write_text
from kdasr.utils.logging import setup_logging

DEFAULTS: dict = {
    "data": {
        "train": None,
        "dev": None,
        "vocab": None,        # a vocab.txt; default: built from data.train (distill: the teachers')
        "min_count": 1,
        "max_vocab": None,
        "max_tokens": 4000,   # padded tokens per batch
    },
    "model": {"name": "lstm", "embed": 256, "hidden": 256, "num_layers": 2, "dropout": 0.2, "tie_weights": True},
    "train": {
        "seed": 1,
        "epochs": 10,
        "max_steps": 0,
        "lr": 2.0e-3,
        "weight_decay": 0.0,
        "lr_decay": 0.5,       # multiply the rate by this after an epoch whose dev perplexity did not improve
        "grad_clip": 0.25,     # as PyTorch's word-language-model example
        "device": "auto",
        "save_every_n": 200,
        "keep_last_n": 2,
        "log_every_n": 50,
        "early_stop_patience": 3,
    },
}
KD_DEFAULTS: dict = {
    "teachers": [],
    "lambda": 0.5,
    "temperature": 1.0,
    "trust": "none",
    "threshold": 0.5,
    "gamma": 1.0,
    # Keep the teachers' logits of every training sentence in memory (float16), computed once:
    # the text never changes between epochs and the teachers run without dropout, so this is the
    # online teacher at the cost of one pass. Refused above cache_max_gb (then set it false).
    "cache_teachers": True,
    "cache_max_gb": 2.0,
}


def validate_config(cfg: Mapping, defaults: Mapping, where: str = "") -> None:
    """Every key of ``cfg`` must exist in ``defaults`` (recursively): a typo is an error naming it."""
    for key, value in cfg.items():
        name = f"{where}{key}"
        if key not in defaults:
            raise ConfigError(f"unknown config key {name!r}; known here: {', '.join(sorted(defaults))}")
        if isinstance(defaults[key], dict) and key != "model":
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key {name!r} must be a section")
            validate_config(value, defaults[key], name + ".")


def resolve_config(cfg: Mapping, distill: bool) -> dict:
    """Defaults filled in and checked; ``kd`` only (and then required) for distillation."""
    defaults = deep_merge(DEFAULTS, {"kd": KD_DEFAULTS} if distill else {})
    validate_config(cfg, defaults)
    out = deep_merge(defaults, cfg)
    if not out["data"]["train"]:
        raise ConfigError("config needs data.train (a text file, one sentence a line)")
    if distill:
        kd = out["kd"]
        if not kd["teachers"]:
            raise ConfigError("kd.teachers must list at least one teacher LM checkpoint")
        check_trust(kd["trust"])
        if not 0.0 <= float(kd["lambda"]) <= 1.0 or float(kd["temperature"]) <= 0:
            raise ConfigError(f"kd.lambda must lie in [0, 1] and kd.temperature be > 0, got {kd['lambda']}, "
                              f"{kd['temperature']}")
    return out


@dataclass
class LmState:
    epoch: int = 1
    step: int = 0
    batch_in_epoch: int = 0
    epoch_done: bool = False
    best_ppl: float = float("inf")
    best_epoch: int = 0
    bad_epochs: int = 0
    lr: float = 0.0
    train_seconds: float = 0.0
    history: list = field(default_factory=list)


class LmTrainer:
    """One LM trained into ``exp_dir`` from a resolved config (``kd`` section: distillation)."""

    def __init__(self, cfg: dict, exp_dir: Path) -> None:
        self.cfg = cfg
        self.exp_dir = Path(exp_dir)
        setup_logging(0, self.exp_dir / "log" / "train.log")
        tcfg, dcfg = cfg["train"], cfg["data"]
        dev = tcfg["device"]
        self.device = torch.device("cuda" if dev == "auto" and torch.cuda.is_available() else
                                   ("cpu" if dev == "auto" else dev))
        torch.manual_seed(tcfg["seed"])
        self.teachers = []
        kd = cfg.get("kd")
        if kd:
            for path in kd["teachers"]:
                model, vocab, _ = load_lm(path, self.device)
                if self.teachers and vocab.words != self.vocab.words:
                    raise ConfigError(f"teacher {path} has another vocabulary than {kd['teachers'][0]}")
                self.vocab = vocab
                self.teachers.append(model)
            if dcfg["vocab"] and Vocab.load(dcfg["vocab"]).words != self.vocab.words:
                raise ConfigError(f"data.vocab {dcfg['vocab']} differs from the teachers' vocabulary")
        elif dcfg["vocab"]:
            self.vocab = Vocab.load(dcfg["vocab"])
        else:
            self.vocab = Vocab.build((w for _, w in read_lines(dcfg["train"])), dcfg["min_count"], dcfg["max_vocab"])
        self.vocab.save(self.exp_dir / "vocab.txt")
        self.train_text = load_text(dcfg["train"], self.vocab)
        self.dev_text = load_text(dcfg["dev"], self.vocab) if dcfg["dev"] else None
        self.model = build_lm(cfg["model"], len(self.vocab)).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=tcfg["lr"], weight_decay=tcfg["weight_decay"])
        self.teacher_cache: Optional[list[torch.Tensor]] = None
        if kd and kd["cache_teachers"]:
            self.teacher_cache = self._teacher_logits_of_corpus(float(kd["cache_max_gb"]))
        self.state = LmState(lr=float(tcfg["lr"]))
        self.tb: Optional[SummaryWriter] = None
        self._stopwatch = Stopwatch()

    # ------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict:
        self.state.train_seconds += self._stopwatch.lap()
        return {
            "model": self.model.state_dict(), "model_cfg": self.cfg["model"], "vocab": self.vocab.words,
            "optimizer": self.optimizer.state_dict(), "rng": rng_state(), "epoch": self.state.epoch,
            "step": self.state.step, "epoch_done": self.state.epoch_done, "train_state": vars(self.state).copy(),
            "config": self.cfg, "num_params": self.model.num_params(),
        }

    def save(self, name: str) -> None:
        save_checkpoint(self.exp_dir / name, self.checkpoint_state())

    def resume(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        if ckpt.get("vocab") != self.vocab.words:
            raise ValueError(f"checkpoint {path} was trained with another vocabulary; use a new --exp-dir")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.state = LmState(**ckpt["train_state"])
        if self.state.epoch_done:
            self.state.epoch += 1
            self.state.epoch_done = False
            self.state.batch_in_epoch = 0
        set_rng_state(ckpt["rng"])
        logging.info("resumed from %s at epoch %d step %d", path, self.state.epoch, self.state.step)

    @torch.no_grad()
    def _teacher_logits_of_corpus(self, max_gb: float) -> list[torch.Tensor]:
        """``(K, len + 1, V)`` float16 teacher logits per training sentence, in corpus order."""
        sents = self.train_text.sentences
        need = len(self.teachers) * self.train_text.num_tokens * len(self.vocab) * 2 / 1e9
        if need > max_gb:
            raise ConfigError(f"caching the teachers' logits needs {need:.1f} GB (> kd.cache_max_gb {max_gb}); "
                              "set kd.cache_teachers=false to run them online")
        cache: list[torch.Tensor] = [torch.empty(0)] * len(sents)
        t0 = time.time()
        batches = make_batches(sents, self.cfg["data"]["max_tokens"])
        for idx in tqdm(batches, desc="teacher logits", disable=None, leave=False):
            x, _, lens = collate([sents[i] for i in idx], self.vocab)
            z = torch.stack([t(x.to(self.device), lens) for t in self.teachers]).half().cpu()
            for b, i in enumerate(idx):
                cache[i] = z[:, b, : int(lens[b])].clone()
        logging.info("teacher logits of %d sentences cached (%.2f GB) in %.1f s", len(sents), need, time.time() - t0)
        return cache

    # -------------------------------------------------------------------- loop
    def loss(self, x: torch.Tensor, y: torch.Tensor, lens: torch.Tensor, idx: list[int]
             ) -> tuple[torch.Tensor, dict]:
        logits = self.model(x, lens)
        kd = self.cfg.get("kd")
        if not kd:
            ce = F.cross_entropy(logits.transpose(1, 2), y, ignore_index=PAD_ID)
            return ce, {"ce": ce.detach()}
        if self.teacher_cache is not None:  # padding rows stay 0: the loss masks them
            z = torch.zeros(len(self.teachers), *logits.shape, dtype=torch.float32)
            for b, i in enumerate(idx):
                z[:, b, : self.teacher_cache[i].shape[1]] = self.teacher_cache[i].float()
            teacher_logits = list(z.to(self.device))
        else:
            with torch.no_grad():
                teacher_logits = [t(x, lens) for t in self.teachers]
        return lm_kd_loss(logits, teacher_logits, y, float(kd["lambda"]), float(kd["temperature"]), kd["trust"],
                          {"threshold": kd["threshold"], "gamma": kd["gamma"]})

    def _epoch(self, max_steps: Optional[int]) -> tuple[dict, bool]:
        tcfg = self.cfg["train"]
        sents = self.train_text.sentences
        batches = make_batches(sents, self.cfg["data"]["max_tokens"], shuffle_seed=tcfg["seed"] * 1000 + self.state.epoch)
        sums: dict[str, float] = {}
        n, tokens, t0 = 0, 0, time.time()
        bar = tqdm(total=len(batches), initial=self.state.batch_in_epoch, desc=f"epoch {self.state.epoch}",
                   disable=None, leave=False)
        for g in self.optimizer.param_groups:
            g["lr"] = self.state.lr
        while self.state.batch_in_epoch < len(batches):
            idx = batches[self.state.batch_in_epoch]
            x, y, lens = collate([sents[i] for i in idx], self.vocab)
            x, y = x.to(self.device), y.to(self.device)
            self.model.train()
            loss, stats = self.loss(x, y, lens, idx)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.state.batch_in_epoch += 1
            self.state.step += 1
            bar.update(1)
            if not torch.isfinite(loss.detach()):
                logging.warning("step %d: non-finite loss, batch %d of epoch %d skipped", self.state.step,
                                self.state.batch_in_epoch, self.state.epoch)
                continue
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tcfg["grad_clip"])
            self.optimizer.step()
            n += 1
            tokens += int((y != PAD_ID).sum())
            for k, v in {"loss": loss.detach(), **stats}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if self.state.step % tcfg["log_every_n"] == 0:
                logging.info("epoch %d step %d (%d/%d batches): loss %.4f, %.0f tokens/s", self.state.epoch,
                             self.state.step, self.state.batch_in_epoch, len(batches), float(loss.detach()),
                             tokens / max(time.time() - t0, 1e-9))
                if self.tb is not None:
                    for k, v in stats.items():
                        self.tb.add_scalar(f"train/{k}", float(v), self.state.step)
            if tcfg["save_every_n"] and self.state.step % tcfg["save_every_n"] == 0:
                self.save(f"checkpoints/checkpoint-{self.state.step}.pt")
                keep = int(tcfg["keep_last_n"])
                for p in list_checkpoints(self.exp_dir, "checkpoint")[:-keep] if keep > 0 else []:
                    p.unlink()
            if max_steps and self.state.step >= max_steps:
                bar.close()
                return {}, True
        bar.close()
        out = {f"train_{k}": v / max(n, 1) for k, v in sums.items()}
        if "train_ce" in out:
            out["train_ppl"] = math.exp(min(out["train_ce"], 50.0))
        return out, False

    def _end_epoch(self, stats: dict) -> bool:
        """Dev perplexity, epoch checkpoint, best.pt, rate decay; True to stop early."""
        tcfg = self.cfg["train"]
        if self.dev_text is not None:
            stats["dev_ppl"] = perplexity(self.model, self.vocab, self.dev_text)["ppl"]
        metric = stats.get("dev_ppl", stats.get("train_ppl", float("inf")))
        improved = metric < self.state.best_ppl
        if improved:
            self.state.best_ppl, self.state.best_epoch, self.state.bad_epochs = metric, self.state.epoch, 0
        else:
            self.state.bad_epochs += 1
            self.state.lr *= float(tcfg["lr_decay"])
        stats["lr"] = self.optimizer.param_groups[0]["lr"]
        self.state.history.append({"epoch": self.state.epoch, **stats})
        self.state.epoch_done = True
        logging.info("epoch %d: %s%s", self.state.epoch, ", ".join(f"{k} {v:.4g}" for k, v in stats.items()),
                     " (best)" if improved else "")
        if self.tb is not None:
            for k, v in stats.items():
                self.tb.add_scalar(f"epoch/{k}", v, self.state.epoch)
        self.save(f"epoch-{self.state.epoch}.pt")
        if improved:
            save_checkpoint(self.exp_dir / "best.pt", self.checkpoint_state())
        patience = tcfg["early_stop_patience"]
        return bool(patience) and self.state.bad_epochs >= patience

    def fit(self, resume: bool = True) -> LmState:
        tcfg = self.cfg["train"]
        save_config(self.cfg, self.exp_dir / "config.yaml")
        self.tb = SummaryWriter(str(self.exp_dir / "tensorboard"))
        path = latest_checkpoint(self.exp_dir) if resume else None
        if path is not None:
            self.resume(path)
        self._stopwatch.restart()
        logging.info("LM %s: %d parameters, vocabulary %d, %d training sentences (%d tokens), device %s%s",
                     self.cfg["model"].get("name", "lstm"), self.model.num_params(), len(self.vocab),
                     len(self.train_text.sentences), self.train_text.num_tokens, self.device,
                     f", {len(self.teachers)} teacher(s), trust {self.cfg['kd']['trust']}" if self.teachers else "")
        stop = False
        t_start = time.time()
        while self.state.epoch <= tcfg["epochs"] and not stop:
            stats, hit_max = self._epoch(tcfg["max_steps"] or None)
            if hit_max:
                self.save(f"checkpoints/checkpoint-{self.state.step}.pt")
                break
            stop = self._end_epoch(stats)
            if not stop and self.state.epoch < tcfg["epochs"]:
                self.state.epoch += 1
                self.state.epoch_done = False
                self.state.batch_in_epoch = 0
            else:
                break
        self.state.train_seconds += self._stopwatch.lap()
        self.tb.close()
        summary = {"steps": self.state.step, "epochs": self.state.epoch, "best_epoch": self.state.best_epoch,
                   "best_dev_ppl": self.state.best_ppl, "train_seconds": round(self.state.train_seconds, 1),
                   "num_params": self.model.num_params(), "vocab_size": len(self.vocab), "device": str(self.device)}
        atomic_write_text(self.exp_dir / "train_summary.yaml", yaml.safe_dump(summary, sort_keys=False))
        logging.info("LM training done: %d steps, %.1f s in this run (%.1f s in all); best epoch %d (dev ppl %.3f)",
                     self.state.step, time.time() - t_start, self.state.train_seconds, self.state.best_epoch,
                     self.state.best_ppl)
        return self.state


def train_lm(cfg: Mapping[str, Any], exp_dir: Path, resume: bool = True, distill: bool = False) -> LmState:
    """Library entry point of ``kdasr lm train`` (``distill=False``) and ``kdasr lm distill``."""
    return LmTrainer(resolve_config(cfg, distill), exp_dir).fit(resume=resume)
