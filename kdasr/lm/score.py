"""Sentence log-probabilities and perplexity, in batches (on the GPU when the model is there).

Perplexity is ``exp(-sum ln p / N)`` over every predicted token, ``</s>``
included and ``<unk>`` counted as a word (as the WikiText-2 numbers of
PyTorch's word-language-model example are), so figures compare with those.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from kdasr.lm.data import PAD_ID, LmText, Vocab, iter_batches, load_text, make_batches
from kdasr.lm.model import lm_from_checkpoint
from kdasr.models.checkpoint import load_checkpoint
from kdasr.utils.io import Pathlike


def batch_logprobs(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, lens: torch.Tensor
                   ) -> torch.Tensor:
    """``ln p(sentence)`` per row ``(B,)``, the sum over its predicted tokens."""
    logits = model(inputs, lens).float()
    lp = -F.cross_entropy(logits.transpose(1, 2), targets.clamp_min(0), reduction="none")
    return (lp * (targets != PAD_ID)).sum(1)


@torch.inference_mode()
def sentence_logprobs(model: torch.nn.Module, vocab: Vocab, sentences: Sequence[Sequence[int]],
                      max_tokens: int = 8000) -> list[float]:
    """Natural-log probability of each encoded sentence (ends included), in the given order."""
    model.eval()
    device = next(model.parameters()).device
    out = [0.0] * len(sentences)
    batches = make_batches(sentences, max_tokens)
    for idx, (x, y, lens) in zip(batches, iter_batches(sentences, batches, vocab)):
        for i, v in zip(idx, batch_logprobs(model, x.to(device), y.to(device), lens).tolist()):
            out[i] = v
    return out


def perplexity(model: torch.nn.Module, vocab: Vocab, text: LmText, max_tokens: int = 8000) -> dict[str, float]:
    """``ppl``, ``log_prob`` (nats), ``tokens`` and ``oov_rate`` of a loaded text."""
    total = sum(sentence_logprobs(model, vocab, text.sentences, max_tokens))
    n = text.num_tokens
    return {"ppl": math.exp(-total / n), "log_prob": total, "tokens": n,
            "oov_rate": text.num_oov / max(text.num_words, 1)}


class EnsembleLm(torch.nn.Module):
    """Several LMs of one vocabulary as one: log of their averaged next-word distributions.

    Its output is a log-probability, which softmax and cross-entropy treat as
    logits, so it scores and rescores like a single model (the distillation
    target of an ensemble of teachers is this same average)."""

    def __init__(self, models: Sequence[torch.nn.Module]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(models)

    def forward(self, inputs: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        lp = torch.stack([m(inputs, lens).float().log_softmax(-1) for m in self.members])
        return torch.logsumexp(lp, 0) - math.log(len(self.members))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def load_lms(paths: Sequence[Pathlike], device: Any = "cpu") -> tuple[torch.nn.Module, Vocab]:
    """One LM checkpoint, or several of one vocabulary as an :class:`EnsembleLm`."""
    loaded = [load_lm(p, device) for p in paths]
    if not loaded:
        raise ValueError("no LM checkpoint given")
    for p, (_, vocab, _) in zip(paths, loaded):
        if vocab.words != loaded[0][1].words:
            raise ValueError(f"LM {p} has another vocabulary than {paths[0]}: they cannot be averaged")
    model = loaded[0][0] if len(loaded) == 1 else EnsembleLm([m for m, _, _ in loaded]).eval()
    return model, loaded[0][1]


def load_lm(path: Pathlike, device: Any = "cpu") -> tuple[torch.nn.Module, Vocab, dict]:
    """An LM checkpoint of ``kdasr lm train|distill``: the model (eval mode), its vocabulary, the checkpoint."""
    ckpt = load_checkpoint(path)
    if "vocab" not in ckpt:
        raise ValueError(f"{path} is not an LM checkpoint (no vocabulary in it)")
    return lm_from_checkpoint(ckpt, device), Vocab(list(ckpt["vocab"])), ckpt


def evaluate_files(checkpoints: Sequence[Pathlike], texts: Sequence[Pathlike], device: Any = "cpu",
                   max_tokens: int = 8000) -> dict[str, dict[str, float]]:
    """Perplexity of an LM (several checkpoints: their average) on each text file (``kdasr lm eval``)."""
    model, vocab = load_lms(checkpoints, device)
    out = {}
    for path in texts:
        stats = perplexity(model, vocab, load_text(path, vocab), max_tokens)
        out[str(Path(path))] = {**stats, "num_params": model.num_params()}
    return out
