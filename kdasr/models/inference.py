"""Running a model over a cut set: the one loop behind dev validation, decoding and the soft-label dump.

Each of the three used to batch, load features and call the model its own
way; they now share :func:`iter_model_outputs`, so a fix to feature
loading, padding or the model call reaches all of them, and what a teacher
wrote into an archive is what the same model decodes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Union

import torch
from lhotse import CutSet
from lhotse.cut import Cut
from lhotse.dataset import SimpleCutSampler
from lhotse.dataset.collation import collate_features

from kdasr.data.errors import DataError

ModelInputs = Callable[[list[Cut]], dict]
"""Extra keyword inputs of a model for a batch of cuts (the Oracle Teacher's transcripts)."""


@dataclass
class ModelOutputs:
    """One batch of :func:`iter_model_outputs`, cuts longest first."""

    cuts: list[Cut]
    log_probs: torch.Tensor
    """``(B, T', V)`` float32 ``log_softmax(logits / temperature)`` on the model's device."""
    lens: torch.Tensor
    """``(B,)`` valid output frames (the model's ``out_lens``)."""
    feature_lens: torch.Tensor
    """``(B,)`` input feature frames, for checking the Frames contract."""

    @property
    def cut_ids(self) -> list[str]:
        return [c.id for c in self.cuts]


def _move(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value


def iter_model_outputs(
    model: torch.nn.Module,
    cuts: Union[CutSet, Iterable[Cut]],
    device: Union[str, torch.device],
    max_duration: Optional[float] = 200.0,
    max_cuts: Optional[int] = None,
    temperature: float = 1.0,
    model_inputs: Optional[ModelInputs] = None,
) -> Iterator[ModelOutputs]:
    """Yield the model's log-probs over ``cuts``, batch by batch, in the cuts' order.

    Batches are lhotse's ``SimpleCutSampler`` (``max_duration`` seconds or
    ``max_cuts`` cuts each, no shuffling), sorted longest first within the
    batch and padded by lhotse's ``collate_features``; the model masks the
    padding (Model contract), so a cut's output does not depend on its
    batch. Runs under ``torch.inference_mode``; ``model`` must already be on
    ``device`` and in eval mode. A cut without features is refused by name
    before any work (run ``kdasr prepare fbank``).
    """
    device = torch.device(device)
    cutset = cuts if isinstance(cuts, CutSet) else CutSet.from_cuts(cuts)
    no_feats = [c.id for c in cutset if not c.has_features]
    if no_feats:
        raise DataError(f"{len(no_feats)} cuts have no precomputed features (run `kdasr prepare fbank` first): "
                        f"{', '.join(no_feats[:5])}")
    sampler = SimpleCutSampler(cutset, max_duration=max_duration, max_cuts=max_cuts)
    with torch.inference_mode():
        for batch in sampler:
            batch = batch.sort_by_duration(ascending=False)
            try:
                feats, feat_lens = collate_features(batch)
            except Exception as e:  # a broken feature file: name the cuts so the user can find it
                raise DataError(f"cannot load the features of cuts {list(batch.ids)[:8]}: {e}") from e
            extra = {k: _move(v, device) for k, v in (model_inputs(list(batch)) if model_inputs else {}).items()}
            logits, out_lens = model(feats.to(device), feat_lens.to(device), **extra)
            yield ModelOutputs(list(batch), torch.log_softmax(logits.float() / temperature, dim=-1), out_lens, feat_lens)
