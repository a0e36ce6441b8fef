"""Small CNN student: 1-D convolutions over time with the feature bins as channels.

Two stride-2 layers give the contract's ceil(T/4) frames, then residual
blocks of (depthwise-separable by default) convolutions run at 25 Hz. Everything
is Conv1d on (B, C, T), which CPU backends run fast, and the network has no
recurrence, so it is cheap to train and decode on a laptop. Padding is
re-zeroed after every layer, so in eval mode a padded utterance gives the same
logits as it would alone.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import nn

from kdasr.models import register_model
from kdasr.models.common import AcousticModel, has_padding, output_lengths, valid_mask

NORMS = ("batch", "layer", "none")


class _ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of a (B, C, T) tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(channels)
    if kind == "layer":
        return _ChannelLayerNorm(channels)
    return nn.Identity()


def _conv(c_in: int, c_out: int, kernel_size: int, stride: int, separable: bool) -> nn.Module:
    """A 'same'-padded conv; separable = depthwise (k taps per channel) then pointwise (1x1)."""
    pad = kernel_size // 2
    if not separable or c_in != c_out:
        return nn.Conv1d(c_in, c_out, kernel_size, stride=stride, padding=pad, bias=False)
    return nn.Sequential(
        nn.Conv1d(c_in, c_in, kernel_size, stride=stride, padding=pad, groups=c_in, bias=False),
        nn.Conv1d(c_in, c_out, 1, bias=False),
    )


class _Layer(nn.Module):
    """conv -> norm -> ReLU -> dropout, with an optional residual and the padding re-zeroed."""

    def __init__(
        self, c_in: int, c_out: int, kernel_size: int, stride: int,
        separable: bool, residual: bool, norm: str, dropout: float,
    ) -> None:
        super().__init__()
        self.conv = _conv(c_in, c_out, kernel_size, stride, separable)
        self.norm = _norm(norm, c_out)
        self.act = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout)
        self.stride = stride
        self.residual = residual and stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor, lens: torch.Tensor, padded: bool) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.dropout(self.act(self.norm(self.conv(x))))
        if self.residual:
            y = y + x
        lens = output_lengths(lens, self.stride)
        if padded:
            y = y * valid_mask(lens, y.size(2), y.dtype).unsqueeze(1)
        return y, lens


@register_model("cnn")
class CnnModel(AcousticModel):
    """Conv1d front end (2 x stride 2) + ``num_layers`` residual conv layers + Linear."""

    def __init__(
        self,
        num_features: int,
        vocab_size: int,
        cmvn: Optional[Mapping[str, Any]] = None,
        *,
        channels: int = 256,
        num_layers: int = 6,
        kernel_size: int = 7,
        separable: bool = True,
        residual: bool = True,
        norm: str = "batch",
        dropout: float = 0.1,
    ) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (keeps ceil(T/2) frames per stride), got {kernel_size}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
        if num_layers < 0:
            raise ValueError(f"num_layers must be >= 0, got {num_layers}")
        super().__init__(num_features, vocab_size, cmvn, dict(
            channels=channels, num_layers=num_layers, kernel_size=kernel_size, separable=bool(separable),
            residual=bool(residual), norm=norm, dropout=dropout,
        ))
        # The first layer mixes all feature bins (plain conv, kernel 3); the second subsamples again.
        layers = [
            _Layer(num_features, channels, 3, 2, False, False, norm, dropout),
            _Layer(channels, channels, kernel_size, 2, separable, False, norm, dropout),
        ]
        layers += [
            _Layer(channels, channels, kernel_size, 1, separable, residual, norm, dropout)
            for _ in range(num_layers)
        ]
        self.layers = nn.ModuleList(layers)
        self.output = nn.Linear(channels, vocab_size)

    def encode(self, x: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lens = x.transpose(1, 2), feat_lens  # (B, F, T)
        padded = has_padding(feat_lens, x.size(2))
        for layer in self.layers:
            x, lens = layer(x, lens, padded)
        return self.output(x.transpose(1, 2)), lens
