"""Training and dumping the Oracle Teacher (:mod:`kdasr.models.oracle`): feeding it the transcript.

The Oracle Teacher reads the target tokens besides the audio. In training
the transcript is both its input and its CTC target
(:class:`OracleObjective`; the model corrupts its input copy itself, in
train mode). When its soft labels are dumped it gets each cut's clean
transcript through ``dump_soft_labels(..., model_inputs=transcript_inputs(tokenizer))``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from lhotse.cut import Cut

from kdasr.data.tokenizer import Tokenizer
from kdasr.data.validate import cut_text
from kdasr.ctc import CtcObjective


def pad_transcripts(targets: Sequence[Sequence[int]], device: Any = "cpu") -> dict:
    """``{"tokens": (B, K) long zero-padded, "token_lens": (B,)}``: the keyword inputs of the oracle model."""
    k = max((len(t) for t in targets), default=0)
    tokens = torch.zeros(len(targets), k, dtype=torch.long)
    for i, t in enumerate(targets):
        tokens[i, : len(t)] = torch.as_tensor(list(t), dtype=torch.long)
    lens = torch.tensor([len(t) for t in targets], dtype=torch.long)
    return {"tokens": tokens.to(device), "token_lens": lens.to(device)}


class OracleObjective(CtcObjective):
    """CTC with the transcript as both the teacher's input and its target.

    Untranscribed cuts get an empty input and no CTC term (as in
    :func:`kdasr.ctc.ctc_loss_hard`).
    """

    def model_inputs(self, batch: dict) -> dict:
        return pad_transcripts(batch["targets"], batch["features"].device)


def transcript_inputs(tokenizer: Any) -> Callable[[list[Cut]], dict]:
    """``model_inputs`` for :func:`kdasr.distill.archive.dump_soft_labels`: each cut's encoded transcript."""

    def inputs(cuts: list[Cut]) -> dict:
        return pad_transcripts([tokenizer.encode(t) if t else [] for t in map(cut_text, cuts)])

    return inputs


def dump_inputs(ckpt: Mapping[str, Any]) -> Optional[Callable[[list[Cut]], dict]]:
    """The ``model_inputs`` a checkpoint's model needs when dumping (None for audio-only models).

    The tokenizer is the training one (``config.data.lang_dir``); its hash must
    match the checkpoint's, or the transcripts would be encoded with other ids.
    """
    if ckpt["model_cfg"].get("name") != "oracle":
        return None
    lang_dir = ckpt["config"]["data"]["lang_dir"]
    tok = Tokenizer.from_dir(lang_dir)
    if tok.hash != ckpt["lang_hash"]:
        raise ValueError(f"oracle teacher was trained with another token set than {lang_dir} (lang hash differs)")
    return transcript_inputs(tok)
