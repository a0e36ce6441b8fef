"""``specialists``: a unified ensemble of specialised CTC teachers in one network.

The trunk is any registered encoder family (``trunk: {name: vgg, ...}``),
built with as many outputs as the heads have classes, so the heads are the
trunk's own output layer split into pieces: one trunk shared by all heads
(``shared_trunk: true``, the cheap default) or one trunk per head. Each
head scores ``[blank, subset..., dustbin]``; an optional ``generalist`` head
scores the whole vocabulary. Head design, blank and dustbin handling and the
combination rules are explained in :mod:`kdasr.distill.specialists`
(the rules themselves are in :mod:`kdasr.models.heads`).

``forward`` returns the combined ``(B, T', V)`` log-probs, so the model is a
teacher like any other for the soft-label dumper and the decoders;
``forward(..., return_heads=True)`` returns the raw head logits that
:class:`kdasr.distill.specialists.SpecialistObjective` trains.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from kdasr.models import build_model, model_class, register_model
from kdasr.models.common import AcousticModel
from kdasr.models.heads import (
    average_rule,
    cover_matrix,
    head_size,
    hinton_rule,
    uncovered_matrix,
    validate_subsets,
)

HeadsOutput = tuple[list[torch.Tensor], Optional[torch.Tensor], torch.Tensor]

# The model option ``combine``: (model, head log-probs, generalist log-probs or None) -> (B, T', V) log-probs.
COMBINE_RULES: dict[str, Callable[["SpecialistsModel", list[torch.Tensor], Optional[torch.Tensor]], torch.Tensor]] = {
    "average": lambda m, heads, g: average_rule(heads, m.subsets, m.cover, g),
    "hinton": lambda m, heads, g: hinton_rule(heads, m.subsets, m.cover, m.uncovered, g, m.hinton_steps, m.hinton_lr),
}


def build_trunk(trunk: Mapping[str, Any], num_features: int, outputs: int, owner: str) -> AcousticModel:
    """A registered encoder family with ``outputs`` outputs, used through its ``encode`` (the owner normalises)."""
    if not isinstance(trunk, Mapping) or "name" not in trunk:
        raise ValueError(f"{owner}: trunk needs a 'name' (an encoder family such as vgg), got {trunk!r}")
    if not model_class(trunk["name"]).encoder_family:
        raise ValueError(f"{owner}: trunk {trunk['name']!r} is not an encoder family")
    return build_model(trunk, num_features, outputs)


@register_model("specialists")
class SpecialistsModel(AcousticModel):
    """Specialist heads (plus an optional generalist) on a shared or per-head trunk, combined to V tokens."""

    objective = "specialist-heads"
    encoder_family = False

    def __init__(
        self,
        num_features: int,
        vocab_size: int,
        cmvn: Optional[Mapping[str, Any]] = None,
        *,
        subsets: Sequence[Sequence[int]] = (),
        trunk: Optional[Mapping[str, Any]] = None,
        shared_trunk: bool = True,
        generalist: bool = False,
        combine: str = "average",
        hinton_steps: int = 30,
        hinton_lr: float = 2.0,
    ) -> None:
        if isinstance(subsets, str):
            raise ValueError(
                f"specialists: subsets {subsets!r} is a file; resolve it to token ids first "
                "(kdasr.distill.specialists.resolve_subsets)"
            )
        subsets = validate_subsets(subsets, vocab_size)
        if combine not in COMBINE_RULES:
            raise ValueError(f"specialists: combine must be one of {', '.join(COMBINE_RULES)}, got {combine!r}")
        if hinton_steps < 0 or not hinton_lr > 0:
            raise ValueError(f"specialists: hinton_steps must be >= 0 and hinton_lr > 0, got {hinton_steps}, {hinton_lr}")
        trunk = dict(trunk or {"name": "vgg"})
        super().__init__(num_features, vocab_size, cmvn, dict(
            subsets=subsets, trunk=trunk, shared_trunk=bool(shared_trunk), generalist=bool(generalist),
            combine=combine, hinton_steps=int(hinton_steps), hinton_lr=float(hinton_lr),
        ))
        self.subsets = subsets
        self.combine = combine
        self.hinton_steps = int(hinton_steps)
        self.hinton_lr = float(hinton_lr)
        self.head_sizes = [head_size(s) for s in subsets] + ([vocab_size] if generalist else [])
        if shared_trunk:
            self.trunks = nn.ModuleList([build_trunk(trunk, num_features, sum(self.head_sizes), self.name)])
        else:
            self.trunks = nn.ModuleList(build_trunk(trunk, num_features, n, self.name) for n in self.head_sizes)
        self.has_generalist = bool(generalist)
        # Rebuilt from the options, so not part of the state dict.
        self.register_buffer("cover", cover_matrix(subsets, vocab_size, 0, self.has_generalist), persistent=False)
        self.register_buffer("uncovered", uncovered_matrix(subsets, vocab_size, 0), persistent=False)

    def encode(self, x: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every head's raw logits, concatenated in head order: ``(B, T', sum of head sizes)``."""
        outs = [trunk.encode(x, feat_lens) for trunk in self.trunks]
        return torch.cat([o for o, _ in outs], dim=-1), outs[0][1]

    def forward(
        self, feats: torch.Tensor, feat_lens: torch.Tensor, return_heads: bool = False
    ) -> Union[tuple[torch.Tensor, torch.Tensor], HeadsOutput]:
        """Combined ``(log-probs (B,T',V), out_lens)``; with ``return_heads``: ``(heads, generalist or None, out_lens)``."""
        raw, lens = super().forward(feats, feat_lens)
        parts = list(raw.split(self.head_sizes, dim=-1))
        generalist = parts.pop() if self.has_generalist else None
        if return_heads:
            return parts, generalist, lens
        heads = [torch.log_softmax(p.float(), dim=-1) for p in parts]
        g = torch.log_softmax(generalist.float(), dim=-1) if generalist is not None else None
        return COMBINE_RULES[self.combine](self, heads, g), lens
