"""Search methods over CTC log-probs, behind one call: ``decoder(log_probs (B,T,V), lens (B,)) -> list[str]``.

:func:`make_decoder` builds one by name (``greedy``, ``beam``, ``wfst``)
from the options ``kdasr decode --opt KEY=VALUE`` collects, so the decode
loop never depends on which search runs. :func:`scan_lm_weights` picks the
LM weight of a beam or WFST search on a dev set.

Nothing here imports torch or a search package at import time: WFST worker
processes import this package, and they should start fast.
"""
from __future__ import annotations

import importlib
import inspect
import logging
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

if TYPE_CHECKING:
    import torch

    from kdasr.data.tokenizer import Tokenizer

Decoder = Callable[["torch.Tensor", "torch.Tensor"], list[str]]
METHODS = ("greedy", "beam", "wfst")
# WFST searches by ``--opt backend=``: kaldi-decoder (CPU, one utterance at a time, n-best) or the batched
# torch search (CPU or CUDA, 1-best); without the option, torch on a CUDA device and kaldi elsewhere.
WFST_BACKENDS = {"kaldi": "kdasr.decode.wfst:WfstDecoder", "torch": "kdasr.decode.wfst_torch:TorchWfstDecoder"}


class GreedyDecoder:
    """Best token per frame, repeats merged, blanks dropped (``kdasr.ctc.greedy_search``)."""

    def __init__(self, tokenizer: "Tokenizer") -> None:
        from kdasr.ctc import greedy_search  # imports torch: not at package import (see the module docstring)

        self.tokenizer = tokenizer
        self._search = greedy_search

    def __call__(self, log_probs: "torch.Tensor", lens: "torch.Tensor") -> list[str]:
        ids = self._search(log_probs, lens, blank_id=self.tokenizer.blank_id)
        return [self.tokenizer.decode(seq) for seq in ids]


def _decoder_class(method: str, backend: str = "kaldi") -> type:
    if method == "greedy":
        return GreedyDecoder
    if method == "beam":
        from kdasr.decode.beam import CtcBeamDecoder

        return CtcBeamDecoder
    if method == "wfst":
        if backend not in WFST_BACKENDS:
            raise ValueError(f"unknown WFST backend {backend!r}; the backends are: {', '.join(WFST_BACKENDS)}")
        module, name = WFST_BACKENDS[backend].split(":")
        return getattr(importlib.import_module(module), name)
    raise ValueError(f"unknown decoding method {method!r}; the methods are: {', '.join(METHODS)}")


def make_decoder(method: str, tokenizer: "Tokenizer", **opts: Any) -> Decoder:
    """Build the ``method`` decoder; ``opts`` are its constructor's keyword options.

    ``device`` is accepted by every method (``kdasr decode`` always passes
    it): the beam search uses it to pick the CUDA decoder, greedy search runs
    where the log-probs are, and the WFST search picks its backend by it
    unless ``backend`` is given (see :data:`WFST_BACKENDS`). An option the
    method does not take is an error that lists the ones it does, so a typo
    in ``--opt`` is not silently ignored.
    """
    device = opts.pop("device", None)
    on_cuda = device is not None and str(device).startswith("cuda")
    backend = opts.pop("backend", None)
    if backend is not None and method != "wfst":
        raise ValueError(f"decoding method {method!r} has one backend; backend= is a wfst option")
    cls = _decoder_class(method, backend or ("torch" if on_cuda else "kaldi"))
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if p not in ("self", "tokenizer")] + (["backend"] if method == "wfst" else [])
    if device is not None and "device" in params:
        opts["device"] = device
    elif on_cuda and method == "wfst":
        logging.info("WFST search (kaldi-decoder) runs on the CPU; log-probs are copied from %s", device)
    unknown = sorted(set(opts) - set(accepted))
    if unknown:
        raise ValueError(f"decoding method {method!r} takes no option {', '.join(map(repr, unknown))}; "
                         f"its options are: {', '.join(accepted) or '(none)'}")
    if method == "wfst" and "graph_dir" not in opts:
        raise ValueError("decoding method 'wfst' needs graph_dir=<lang_dir>/graph_<hash> (see `kdasr graph`)")
    return cls(tokenizer=tokenizer, **opts)


def scan_lm_weights(
    decoder_factory: Callable[[float], Decoder],
    log_probs_list: Sequence[tuple["torch.Tensor", "torch.Tensor"]],
    refs: Sequence[str],
    weights: Iterable[float],
) -> tuple[float, list[dict[str, float]]]:
    """Decode the same log-probs with each LM weight; return ``(best weight, table)``.

    ``decoder_factory(w)`` builds a decoder with LM weight ``w`` (e.g.
    ``lambda w: make_decoder("wfst", tok, graph_dir=g, lm_weight=w)``);
    ``log_probs_list`` holds ``(log_probs, lens)`` batches computed once, and
    ``refs`` the reference transcripts of their utterances in order. The
    table has one row per weight: ``lm_weight``, ``wer`` (%), ``errors``,
    ``ref_words``. Ties go to the weight listed first.
    """
    import kaldialign

    refs = [r.split() for r in refs]
    table: list[dict[str, float]] = []
    for w in weights:
        decoder = decoder_factory(w)
        try:
            hyps = [h.split() for lp, lens in log_probs_list for h in decoder(lp, lens)]
        finally:
            close = getattr(decoder, "close", None)
            if close is not None:
                close()
        if len(hyps) != len(refs):
            raise ValueError(f"{len(refs)} references for {len(hyps)} decoded utterances")
        errors = sum(kaldialign.edit_distance(r, h)["total"] for r, h in zip(refs, hyps))
        n = sum(len(r) for r in refs)
        table.append({"lm_weight": w, "wer": 100.0 * errors / max(n, 1), "errors": errors, "ref_words": n})
        logging.info("lm_weight %.3g: WER %.2f%% (%d/%d)", w, table[-1]["wer"], errors, n)
    if not table:
        raise ValueError("no LM weights to scan")
    best = min(table, key=lambda row: row["wer"])
    return best["lm_weight"], table
