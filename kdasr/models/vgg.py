"""VGG teacher: 2-D conv blocks over (time, frequency), then temporal convolution layers.

The 3x3 blocks see only ~0.15 s; CTC over characters needs word-sized
context to spell, so the layers after the blocks are residual 1-D
convolutions over time (``context`` frames at 25 Hz each, optionally
dilated so the stack sees whole words at no extra cost) rather than
frame-wise dense layers; each is batch-normalised, without which the
residual stack trained three times slower on the demo corpus.

Each block stacks 3x3 convolutions (BatchNorm, ReLU) and ends in a 2x2
ceil-mode max-pool, so two blocks give the contract's ceil(T/4) frames.
Padded frames are zeroed after every convolution: post-ReLU activations are
non-negative, so zero padding never wins a max-pool and a padded utterance
decodes exactly as it would alone (in eval mode).
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from kdasr.models import register_model
from kdasr.models.common import AcousticModel, has_padding, output_lengths, valid_mask


class _ConvBlock(nn.Module):
    """``n`` x (3x3 conv, BatchNorm, ReLU) with padding re-zeroed, then 2x2 ceil-mode pooling."""

    def __init__(self, c_in: int, c_out: int, n: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        for i in range(n):
            self.layers.append(nn.Sequential(
                nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ))
        self.pool = nn.MaxPool2d(2, 2, ceil_mode=True)

    def forward(self, x: torch.Tensor, lens: torch.Tensor, padded: bool) -> tuple[torch.Tensor, torch.Tensor]:
        mask = valid_mask(lens, x.size(2), x.dtype)[:, None, :, None] if padded else None
        for layer in self.layers:
            x = layer(x)
            if mask is not None:
                x = x * mask
        return self.pool(x), output_lengths(lens, 2)


@register_model("vgg")
class VggModel(AcousticModel):
    """VGG conv blocks + residual temporal convolutions; a strong, fairly cheap CTC teacher."""

    def __init__(
        self,
        num_features: int,
        vocab_size: int,
        cmvn: Optional[Mapping[str, Any]] = None,
        *,
        channels: Sequence[int] = (64, 128),
        convs_per_block: Union[int, Sequence[int]] = 2,
        hidden: int = 512,
        num_layers: int = 2,
        context: int = 5,
        dilations: Optional[Sequence[int]] = None,
        dropout: float = 0.1,
    ) -> None:
        channels = [int(c) for c in channels]
        per_block = [int(convs_per_block)] * len(channels) if isinstance(convs_per_block, int) else [int(n) for n in convs_per_block]
        if len(channels) != 2:
            raise ValueError(f"vgg needs exactly 2 pooled blocks (subsampling 4), got channels={channels}")
        if len(per_block) != len(channels) or min(per_block) < 1:
            raise ValueError(f"convs_per_block {convs_per_block} must be >= 1 per block of channels={channels}")
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        if context < 1 or context % 2 == 0:
            raise ValueError(f"context must be a positive odd number of frames, got {context}")
        dilations = [1] * num_layers if dilations is None else [int(d) for d in dilations]
        if len(dilations) != num_layers or min(dilations, default=1) < 1:
            raise ValueError(f"dilations {dilations} must give one value >= 1 per temporal layer (num_layers={num_layers})")
        super().__init__(num_features, vocab_size, cmvn, dict(
            channels=channels, convs_per_block=convs_per_block if isinstance(convs_per_block, int) else per_block,
            hidden=hidden, num_layers=num_layers, context=context, dilations=dilations, dropout=dropout,
        ))
        blocks, c_in, freq = [], 1, num_features
        for c, n in zip(channels, per_block):
            blocks.append(_ConvBlock(c_in, c, n))
            c_in, freq = c, output_lengths(freq, 2)
        self.blocks = nn.ModuleList(blocks)
        self.proj = nn.Sequential(nn.Linear(c_in * freq, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.temporal = nn.ModuleList(
            nn.Sequential(nn.Conv1d(hidden, hidden, context, padding=d * (context // 2), dilation=d, bias=False),
                          nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
            for d in dilations
        )
        self.output = nn.Linear(hidden, vocab_size)

    def encode(self, x: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lens = x.unsqueeze(1), feat_lens  # (B, 1, T, F)
        padded = has_padding(feat_lens, x.size(2))
        for block in self.blocks:
            x, lens = block(x, lens, padded)
        b, c, t, f = x.shape
        x = self.proj(x.permute(0, 2, 1, 3).reshape(b, t, c * f)).transpose(1, 2)  # (B, H, T')
        # Zeroed padding equals the conv's own zero padding, so batching changes no output.
        mask = valid_mask(lens, t, x.dtype)[:, None, :] if padded else None
        for layer in self.temporal:
            x = x + layer(x if mask is None else x * mask)
        return self.output(x.transpose(1, 2)), lens
