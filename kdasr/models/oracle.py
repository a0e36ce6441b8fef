"""``oracle``: a CTC teacher that hears the audio and reads the transcript (Yoon et al., TASLP 2023).

An acoustic encoder (any registered encoder family, ``encoder: {name: cnn, ...}``)
gives one query per 40 ms frame; a text encoder turns the target tokens into
a memory the frames attend to; the attended text is added to the frame and
a feed-forward layer maps it to the vocabulary. With the transcript at hand
the teacher's spikes are sharp and right, which is what a student learns
from its soft labels.

The danger is the trivial solution: the transcript alone already holds the
answer, so a network that can read the tokens *in order* learns to copy
them and to ignore the audio; its soft labels then say nothing about the
acoustics (where a token is, what it sounds like). Two mechanisms prevent
it, and a third keeps the model usable without a transcript:

1. **No order on the text side.** The text encoder has no positional
   information (embeddings, then self-attention, which is permutation
   equivariant), and the queries carry none either: the memory is a bag of
   tokens. Which token comes at which frame, and in which order, can only
   come from the audio; the text can at most say which tokens to expect.
2. **Corrupted transcripts in training** (like dropout, only in train mode):
   each token is replaced by a random one with probability
   ``token_substitution`` and deleted with ``token_deletion``. The bag is
   then an unreliable hint and the audio the only reliable source, so the
   network cannot learn to emit what the bag says against the audio.
3. **Whole-transcript dropout** (``transcript_dropout``): the memory then
   holds only a learned null slot (always present, so attention is never
   over an empty set). The model learns to recognise from audio alone, which
   is what ``forward(feats, feat_lens)`` without tokens does (the trainer's
   validation, decoders that know no transcript).

``text_positions: true`` gives both sides positions (relative position in
the utterance, sinusoidal) and is the naive design that copies; it exists
so the tests can show that the mechanisms above are what prevents copying.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import torch
from torch import nn

from kdasr.models import register_model
from kdasr.models.common import AcousticModel, make_pad_mask
from kdasr.models.specialists import build_trunk


def relative_positions(lens: torch.Tensor, max_len: int, dim: int) -> torch.Tensor:
    """``(B, max_len, dim)`` sinusoids of each step's relative position ``(i + 0.5) / len`` in its sequence.

    Relative, not absolute: text and audio have different lengths, and only
    relative positions line token k up with the frames it is spoken in.
    """
    u = (torch.arange(max_len, device=lens.device).unsqueeze(0) + 0.5) / lens.clamp(min=1).unsqueeze(1)
    freqs = math.pi * torch.arange(1, dim // 2 + 1, device=lens.device, dtype=torch.float32)
    ang = u.unsqueeze(-1).float() * freqs
    pe = torch.cat([ang.sin(), ang.cos()], dim=-1)
    return nn.functional.pad(pe, (0, dim - pe.size(-1)))


@register_model("oracle")
class OracleModel(AcousticModel):
    """Acoustic encoder + cross-attention to an order-free text memory + feed-forward -> V logits."""

    inputs = ("features", "targets")
    encoder_family = False

    def __init__(
        self,
        num_features: int,
        vocab_size: int,
        cmvn: Optional[Mapping[str, Any]] = None,
        *,
        encoder: Optional[Mapping[str, Any]] = None,
        d_model: int = 256,
        attention_heads: int = 4,
        text_layers: int = 1,
        dropout: float = 0.1,
        token_substitution: float = 0.2,
        token_deletion: float = 0.1,
        transcript_dropout: float = 0.2,
        text_positions: bool = False,
    ) -> None:
        if d_model < 2 or d_model % attention_heads:
            raise ValueError(f"oracle: d_model ({d_model}) must be a multiple of attention_heads ({attention_heads})")
        if text_layers < 0:
            raise ValueError(f"oracle: text_layers must be >= 0, got {text_layers}")
        for what, p in (("token_substitution", token_substitution), ("token_deletion", token_deletion),
                        ("transcript_dropout", transcript_dropout)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"oracle: {what} must lie in [0, 1], got {p}")
        encoder = dict(encoder or {"name": "cnn"})
        super().__init__(num_features, vocab_size, cmvn, dict(
            encoder=encoder, d_model=d_model, attention_heads=attention_heads, text_layers=text_layers,
            dropout=dropout, token_substitution=token_substitution, token_deletion=token_deletion,
            transcript_dropout=transcript_dropout, text_positions=bool(text_positions),
        ))
        self.d_model = d_model
        self.text_positions = bool(text_positions)
        self.p_sub, self.p_del, self.p_drop = token_substitution, token_deletion, transcript_dropout
        self.encoder = build_trunk(encoder, num_features, d_model, self.name)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.null = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.text = nn.ModuleList(
            nn.TransformerEncoderLayer(d_model, attention_heads, 2 * d_model, dropout, batch_first=True)
            for _ in range(text_layers)
        )
        self.attn = nn.MultiheadAttention(d_model, attention_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(nn.Linear(d_model, 2 * d_model), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                 nn.Linear(2 * d_model, d_model))
        self.norm2 = nn.LayerNorm(d_model)
        self.output = nn.Linear(d_model, vocab_size)

    def encode(self, x: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The acoustic encoder alone: ``(B, T', d_model)`` frame queries."""
        return self.encoder.encode(x, feat_lens)

    def _corrupt(self, tokens: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Training-time substitutions, deletions and whole-transcript dropout (deleted = masked out)."""
        if not self.training:
            return tokens, keep
        b, k = tokens.shape
        dev = tokens.device
        sub = torch.rand(b, k, device=dev) < self.p_sub
        tokens = torch.where(sub, torch.randint(1, max(self.vocab_size, 2), (b, k), device=dev), tokens)
        keep = keep & (torch.rand(b, k, device=dev) >= self.p_del) & (torch.rand(b, 1, device=dev) >= self.p_drop)
        return tokens, keep

    def _memory(self, tokens: torch.Tensor, token_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 1 + K, d)`` text memory (null slot first) and its key padding mask (True = ignore)."""
        b = tokens.size(0)
        keep = ~make_pad_mask(token_lens, tokens.size(1))
        tokens, keep = self._corrupt(tokens, keep)
        m = self.embed(tokens.clamp(0, self.vocab_size - 1))
        if self.text_positions:
            m = m + relative_positions(token_lens, tokens.size(1), self.d_model)
        m = torch.cat([self.null.expand(b, 1, -1).to(m.dtype), m], dim=1)
        pad = torch.cat([torch.zeros(b, 1, dtype=torch.bool, device=keep.device), ~keep], dim=1)
        for layer in self.text:
            m = layer(m, src_key_padding_mask=pad)
        return m, pad

    def forward(
        self,
        feats: torch.Tensor,
        feat_lens: torch.Tensor,
        tokens: Optional[torch.Tensor] = None,
        token_lens: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (B,T',V), out_lens)`` given the audio and, optionally, the padded transcripts ``tokens (B,K)``.

        Without ``tokens`` the model recognises from the audio alone (the
        memory is the null slot only).
        """
        a, lens = super().forward(feats, feat_lens)
        b = a.size(0)
        if tokens is None:
            tokens = torch.zeros(b, 0, dtype=torch.long, device=a.device)
            token_lens = torch.zeros(b, dtype=torch.long, device=a.device)
        elif token_lens is None or tokens.dim() != 2 or tokens.size(0) != b or token_lens.shape != (b,):
            raise ValueError(
                f"oracle: tokens must be (B={b}, K) with token_lens (B,), got {tuple(tokens.shape)} and "
                f"{None if token_lens is None else tuple(token_lens.shape)}"
            )
        tokens, token_lens = tokens.to(a.device).long(), token_lens.to(a.device).long()
        memory, pad = self._memory(tokens, token_lens)
        q = a + relative_positions(lens, a.size(1), self.d_model).to(a.dtype) if self.text_positions else a
        ctx, _ = self.attn(q, memory, memory, key_padding_mask=pad, need_weights=False)
        h = self.norm1(a + ctx)
        h = self.norm2(h + self.ffn(h))
        return self.output(h), lens
