"""LSTM language models, built by name from a config section (a registry, as for acoustic models)."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from kdasr.config import ConfigError


class LstmLm(nn.Module):
    """Embedding, LSTM layers, dropout, output layer (tied to the embedding when sizes allow).

    Tying (Press & Wolf 2017; Inan et al. 2017) halves the parameters of a
    small-vocabulary model's ends and regularizes it; it needs
    ``embed == hidden``, or a projection of the LSTM output to ``embed``,
    which ``tie_weights`` adds when the two differ.
    """

    def __init__(self, vocab_size: int, embed: int = 256, hidden: int = 256, num_layers: int = 2,
                 dropout: float = 0.2, tie_weights: bool = True) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embed)
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embed, hidden, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.proj = nn.Linear(hidden, embed, bias=False) if tie_weights and hidden != embed else None
        self.output = nn.Linear(embed if tie_weights else hidden, vocab_size)
        if tie_weights:
            self.output.weight = self.embedding.weight
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.output.bias)

    def forward(self, inputs: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """``inputs (B, L)`` token ids, ``lens (B,)`` -> logits ``(B, L, V)`` (rows past a length are garbage)."""
        x = self.drop(self.embedding(inputs))
        packed = nn.utils.rnn.pack_padded_sequence(x, lens.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        h, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=inputs.shape[1])
        h = self.drop(h)
        if self.proj is not None:
            h = self.proj(h)
        return self.output(h)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


LM_MODELS: dict[str, Callable[..., nn.Module]] = {"lstm": LstmLm}


def build_lm(cfg: dict, vocab_size: int) -> nn.Module:
    """The model named ``cfg['name']`` with the other keys as its options (a typo is an error naming it)."""
    cfg = dict(cfg)
    name = cfg.pop("name", "lstm")
    if name not in LM_MODELS:
        raise ConfigError(f"model.name {name!r} is not an LM; known: {', '.join(LM_MODELS)}")
    try:
        return LM_MODELS[name](vocab_size=vocab_size, **cfg)
    except TypeError as e:
        raise ConfigError(f"model ({name}): {e}") from e


def lm_from_checkpoint(ckpt: dict[str, Any], device: Any = "cpu") -> nn.Module:
    model = build_lm(ckpt["model_cfg"], len(ckpt["vocab"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()
