"""LSTM teacher: a strided Conv1d front end (subsampling 4) and a (bi)LSTM stack.

Padding must not leak into valid frames, but packed sequences run 3-4x
slower than padded ones on CPU. So the LSTMs run on padded tensors: a
forward-in-time LSTM never sees the padding before a valid frame, and the
backward direction is a forward LSTM over each utterance reversed within its
own length (padding stays at the end), reversed back afterwards. The front
end re-zeroes padding after each convolution for the same reason.
``proj_size`` works but has no oneDNN kernel, so it is slow on CPU.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import nn

from kdasr.models import register_model
from kdasr.models.common import AcousticModel, has_padding, output_lengths, valid_mask


def reverse_padded(x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """Reverse each ``(B, T, C)`` sequence within its length; padding stays in place (self-inverse)."""
    t = torch.arange(x.size(1), device=x.device).unsqueeze(0)
    idx = torch.where(t < lens.unsqueeze(1), lens.unsqueeze(1) - 1 - t, t)
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.size(2)))


@register_model("lstm")
class LstmModel(AcousticModel):
    """Conv1d (stride 2) x 2 -> LSTM x ``num_layers`` -> Linear to the vocabulary."""

    def __init__(
        self,
        num_features: int,
        vocab_size: int,
        cmvn: Optional[Mapping[str, Any]] = None,
        *,
        conv_channels: int = 256,
        hidden: int = 256,
        num_layers: int = 3,
        bidirectional: bool = True,
        proj_size: int = 0,
        dropout: float = 0.1,
    ) -> None:
        if num_layers < 1:
            raise ValueError(f"lstm needs num_layers >= 1, got {num_layers}")
        if proj_size < 0 or (proj_size and proj_size >= hidden):
            raise ValueError(f"proj_size must be 0 (none) or smaller than hidden ({hidden}), got {proj_size}")
        super().__init__(num_features, vocab_size, cmvn, dict(
            conv_channels=conv_channels, hidden=hidden, num_layers=num_layers,
            bidirectional=bool(bidirectional), proj_size=proj_size, dropout=dropout,
        ))
        # kernel 3, padding 1, stride 2 -> floor((T - 1) / 2) + 1 == ceil(T / 2) frames.
        # BatchNorm after each conv: without it the LSTM sat on the all-blank CTC plateau for epochs.
        self.convs = nn.ModuleList([
            nn.Sequential(nn.Conv1d(c_in, conv_channels, 3, stride=2, padding=1, bias=False),
                          nn.BatchNorm1d(conv_channels))
            for c_in in (num_features, conv_channels)
        ])
        self.act = nn.ReLU(inplace=True)
        self.bidirectional = bool(bidirectional)
        dirs = 2 if bidirectional else 1
        out = proj_size or hidden
        if self.bidirectional:
            # One single-layer LSTM per layer and direction: each layer needs both directions of the last.
            def layer(i: int) -> nn.LSTM:
                return nn.LSTM(conv_channels if i == 0 else out * dirs, hidden, batch_first=True, proj_size=proj_size)

            self.fwd = nn.ModuleList([layer(i) for i in range(num_layers)])
            self.bwd = nn.ModuleList([layer(i) for i in range(num_layers)])
        else:
            self.lstm = nn.LSTM(conv_channels, hidden, num_layers=num_layers, batch_first=True,
                                proj_size=proj_size, dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(out * dirs, vocab_size)

    def encode(self, x: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, lens = x.transpose(1, 2), feat_lens  # (B, F, T)
        padded = has_padding(feat_lens, x.size(2))
        for conv in self.convs:
            x, lens = self.act(conv(x)), output_lengths(lens, 2)
            if padded:
                x = x * valid_mask(lens, x.size(2), x.dtype).unsqueeze(1)
        x = self.dropout(x.transpose(1, 2))  # (B, T', C)
        if not self.bidirectional:
            x, _ = self.lstm(x)
        else:
            for i, (fwd, bwd) in enumerate(zip(self.fwd, self.bwd)):
                inp = self.dropout(x) if i > 0 else x
                back, _ = bwd(reverse_padded(inp, lens))
                y = torch.cat([fwd(inp)[0], reverse_padded(back, lens)], dim=-1)
                # Residual between equal-width layers: shortens the all-blank CTC plateau
                # (demo, 3 epochs: dev loss 27.4 with it, 32.4 without).
                x = x + y if y.shape == x.shape else y
        return self.output(self.dropout(x)), lens
