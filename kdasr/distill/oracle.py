"""Dumping the soft labels of a model that reads the transcript (the Oracle Teacher, :mod:`kdasr.models.oracle`).

In training such a model gets each batch's targets from the trainer's
objective (:func:`kdasr.models.common.model_inputs`); when its soft labels
are dumped it gets each cut's clean transcript, encoded with its training
token set, through ``dump_soft_labels(..., model_inputs=dump_inputs(ckpt))``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Optional

from lhotse.cut import Cut

from kdasr.data.tokenizer import Tokenizer
from kdasr.data.validate import cut_text
from kdasr.models import model_class
from kdasr.models.common import pad_targets


def transcript_inputs(tokenizer: Any) -> Callable[[list[Cut]], dict]:
    """``model_inputs`` for :func:`kdasr.distill.archive.dump_soft_labels`: each cut's encoded transcript."""

    def inputs(cuts: list[Cut]) -> dict:
        return pad_targets([tokenizer.encode(t) if t else [] for t in map(cut_text, cuts)])

    return inputs


def dump_inputs(ckpt: Mapping[str, Any]) -> Optional[Callable[[list[Cut]], dict]]:
    """The ``model_inputs`` a checkpoint's model declares it needs when dumping (None for audio-only models).

    The tokenizer is the training one (``config.data.lang_dir``); its hash must
    match the checkpoint's, or the transcripts would be encoded with other ids.
    """
    if "targets" not in model_class(ckpt["model_cfg"]["name"]).inputs:
        return None
    lang_dir = ckpt["config"]["data"]["lang_dir"]
    tok = Tokenizer.from_dir(lang_dir)
    if tok.hash != ckpt["lang_hash"]:
        raise ValueError(
            f"model {ckpt['model_cfg']['name']!r} reads the transcript but was trained with another token set "
            f"than {lang_dir} (lang hash differs)"
        )
    return transcript_inputs(tok)
