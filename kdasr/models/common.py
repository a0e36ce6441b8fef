"""Pieces every acoustic model shares: frame arithmetic, CMVN, padding masks, the base class.

All models subsample by 4 with ceil semantics (docs/ARCHITECTURE.md, Frames),
so teachers and students share 40 ms output frames and a soft-label archive
keyed by cut id serves any student.
"""
from __future__ import annotations

import abc
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from kdasr.data.features import FRAME_SHIFT as FEATURE_FRAME_SHIFT

SUBSAMPLING = 4
"""Every model subsamples its 10 ms feature frames by this factor, with ceil semantics (:func:`output_lengths`)."""
FRAME_SHIFT = FEATURE_FRAME_SHIFT * SUBSAMPLING
"""Seconds per output frame (40 ms): what a soft-label archive records and a student is checked against."""

IntOrTensor = Union[int, torch.Tensor]


def output_lengths(feat_lens: IntOrTensor, subsampling: int = SUBSAMPLING) -> IntOrTensor:
    """``ceil(T / subsampling)`` for an int or an integer tensor (the frame contract)."""
    if isinstance(feat_lens, torch.Tensor):
        return torch.div(feat_lens + (subsampling - 1), subsampling, rounding_mode="floor")
    return -(-int(feat_lens) // subsampling)


def make_pad_mask(lens: torch.Tensor, max_len: Optional[int] = None) -> torch.Tensor:
    """``(B, max_len)`` bool mask, True on padded frames (icefall's convention)."""
    if max_len is None:
        max_len = int(lens.max()) if lens.numel() else 0
    steps = torch.arange(max_len, device=lens.device)
    return steps.unsqueeze(0) >= lens.unsqueeze(1)


def valid_mask(lens: torch.Tensor, max_len: int, dtype: torch.dtype) -> torch.Tensor:
    """``(B, max_len)`` float mask, 1 on valid frames: multiplying by it zeroes padding."""
    return (~make_pad_mask(lens, max_len)).to(dtype)


class GlobalCMVN(nn.Module):
    """Global mean/variance normalisation stored as buffers.

    Keeping the statistics inside the model means a checkpoint or exported
    model can never be decoded with the wrong stats file. Without statistics
    it is the identity (mean 0, std 1); the buffers always exist so a state
    dict with real statistics loads into a model built without them.
    """

    def __init__(
        self,
        num_features: int,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.num_features = num_features
        m = torch.zeros(num_features) if mean is None else torch.as_tensor(mean, dtype=torch.float32).flatten()
        s = torch.ones(num_features) if std is None else torch.as_tensor(std, dtype=torch.float32).flatten()
        for what, t in (("mean", m), ("std", s)):
            if t.numel() != num_features:
                raise ValueError(f"CMVN {what} has {t.numel()} values but the model takes {num_features} features")
        self.register_buffer("mean", m.clone())
        self.register_buffer("std", s.clamp(min=eps))

    @classmethod
    def from_stats(cls, num_features: int, stats: Optional[Mapping[str, Any]]) -> "GlobalCMVN":
        """Build from a stats dict with ``mean`` and ``std`` (or ``var``); ``None`` gives the identity."""
        if stats is None:
            return cls(num_features)
        if "mean" not in stats or not ("std" in stats or "var" in stats):
            raise ValueError(f"CMVN stats need 'mean' and 'std' (or 'var'); got keys {sorted(stats)}")
        std = stats.get("std")
        if std is None:
            std = torch.as_tensor(stats["var"], dtype=torch.float32).clamp(min=0).sqrt()
        return cls(num_features, stats["mean"], std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}"


class AcousticModel(nn.Module, abc.ABC):
    """Base of every CTC acoustic model (the Model contract in docs/ARCHITECTURE.md).

    ``forward`` normalises with the global CMVN, zeroes padded frames (so the
    network sees the same padding whatever value the collater used) and hands
    over to ``encode``. Subclasses implement ``encode`` and pass their size
    options to ``__init__`` so ``model_cfg`` can rebuild the same network.
    """

    #: registry name, set by ``kdasr.models.register_model``
    name: str = ""
    subsampling: int = SUBSAMPLING
    #: seconds per output frame (subsampling 4 x 10 ms)
    frame_shift: float = FRAME_SHIFT
    #: subtract each utterance's mean log-mel (per bin) after the global CMVN: a recording's gain
    #: (and a fixed channel) is a constant offset in log-mel, so this makes the model level-invariant
    utt_norm: bool = False
    #: batch fields ``forward`` reads when training and dumping soft labels: ``"features"``, and
    #: ``"targets"`` for a model that also reads the transcript (as ``tokens``/``token_lens``,
    #: see :func:`model_inputs`); decoders and validation give the features alone
    inputs: tuple[str, ...] = ("features",)
    #: the training objective it needs (``kdasr.train.build.OBJECTIVES``): per-head CTC for specialists
    objective: str = "ctc"
    #: whether other models can use it as their encoder or trunk (``kdasr.models.specialists.build_trunk``)
    encoder_family: bool = True

    def __init__(
        self,
        num_features: int,
        vocab_size: int,
        cmvn: Optional[Mapping[str, Any]] = None,
        options: Optional[Mapping[str, Any]] = None,
    ) -> None:
        super().__init__()
        if num_features < 1 or vocab_size < 1:
            raise ValueError(f"num_features ({num_features}) and vocab_size ({vocab_size}) must be positive")
        self.num_features = int(num_features)
        self.vocab_size = int(vocab_size)
        self.options = dict(options or {})
        self.cmvn = GlobalCMVN.from_stats(self.num_features, cmvn)

    @property
    def model_cfg(self) -> dict:
        """``{"name": ..., **size options}``: what ``build_model`` needs to rebuild this network."""
        return {"name": self.name, **self.options}

    def num_params(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``feats (B,T,F)``, ``feat_lens (B,)`` -> ``logits (B,T',V)``, ``out_lens (B,)`` with ``T' = ceil(T/4)``."""
        if feats.dim() != 3 or feats.size(2) != self.num_features:
            raise ValueError(f"expected features (B, T, {self.num_features}), got {tuple(feats.shape)}")
        if feat_lens.dim() != 1 or feat_lens.size(0) != feats.size(0):
            raise ValueError(f"feat_lens must have shape ({feats.size(0)},), got {tuple(feat_lens.shape)}")
        if not _is_tracing():
            # Logits must have exactly max(out_lens) frames even if the batch was padded further.
            t_max = int(feat_lens.max()) if feat_lens.numel() else 0
            if t_max > feats.size(1):
                raise ValueError(f"feat_lens has {t_max} frames but the features only {feats.size(1)}")
            feats = feats[:, :t_max]
        feat_lens = feat_lens.to(device=feats.device, dtype=torch.long)
        mask = valid_mask(feat_lens, feats.size(1), feats.dtype).unsqueeze(-1)
        x = self.cmvn(feats) * mask
        if self.utt_norm:
            mean = x.sum(dim=1, keepdim=True) / feat_lens.clamp(min=1).to(x.dtype).view(-1, 1, 1)
            x = (x - mean) * mask
        return self.encode(x, feat_lens)

    @abc.abstractmethod
    def encode(self, x: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised, zero-padded ``x (B,T,F)`` -> ``(logits, out_lens)``."""


def pad_targets(targets: Sequence[Sequence[int]], device: Any = "cpu") -> dict:
    """``{"tokens": (B, K) long zero-padded, "token_lens": (B,)}``: how a model with the ``targets`` input reads them."""
    k = max((len(t) for t in targets), default=0)
    tokens = torch.zeros(len(targets), k, dtype=torch.long)
    for i, t in enumerate(targets):
        tokens[i, : len(t)] = torch.as_tensor(list(t), dtype=torch.long)
    lens = torch.tensor([len(t) for t in targets], dtype=torch.long)
    return {"tokens": tokens.to(device), "token_lens": lens.to(device)}


def model_inputs(model: nn.Module, targets: Sequence[Sequence[int]], device: Any = "cpu") -> dict:
    """The keyword inputs besides the features that ``model`` declares it reads (``AcousticModel.inputs``).

    ``model`` may be wrapped (DistributedDataParallel): the declaration is the wrapped model's.
    """
    inner = getattr(model, "module", model)
    return pad_targets(targets, device) if "targets" in getattr(inner, "inputs", ()) else {}


def has_padding(lens: torch.Tensor, max_len: int) -> bool:
    """Whether any sequence is shorter than ``max_len``; lets models skip masking unpadded batches.

    Masking a full-resolution activation map costs a pass over memory; a
    batch without padding (same-length utterances) needs none. Under
    tracing it answers True so exported graphs always mask.
    """
    return _is_tracing() or bool((lens < max_len).any())


def _is_tracing() -> bool:
    """True under jit tracing / torch.export / ONNX export, where data-dependent slicing is not allowed."""
    return bool(torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export())

