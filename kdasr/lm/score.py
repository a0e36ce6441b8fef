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
from kdasr.train.checkpoint import load_checkpoint
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


def load_lm(path: Pathlike, device: Any = "cpu") -> tuple[torch.nn.Module, Vocab, dict]:
    """An LM checkpoint of ``kdasr lm train|distill``: the model (eval mode), its vocabulary, the checkpoint."""
    ckpt = load_checkpoint(path)
    if "vocab" not in ckpt:
        raise ValueError(f"{path} is not an LM checkpoint (no vocabulary in it)")
    return lm_from_checkpoint(ckpt, device), Vocab(list(ckpt["vocab"])), ckpt


def evaluate_files(checkpoint: Pathlike, texts: Sequence[Pathlike], device: Any = "cpu",
                   max_tokens: int = 8000) -> dict[str, dict[str, float]]:
    """Perplexity of ``checkpoint`` on each text file (the library side of ``kdasr lm eval``)."""
    model, vocab, ckpt = load_lm(checkpoint, device)
    out = {}
    for path in texts:
        stats = perplexity(model, vocab, load_text(path, vocab), max_tokens)
        out[str(Path(path))] = {**stats, "num_params": model.num_params()}
    return out
