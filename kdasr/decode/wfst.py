"""WFST decoding of CTC log-probs over a TLG graph with ``kaldi_decoder`` (CPU).

``kaldi_decoder.DecodableCtc`` returns column ``i - 1`` of the log-prob matrix
for input label ``i``, which is why :mod:`kdasr.decode.graph` gives the CTC
blank (token 0) input label 1. Costs follow Kaldi: the search minimises
``acoustic_scale * (-log p) + lm_weight * graph cost``, and ``beam`` is a
bound on that sum; the decoder gets log-probs scaled by
``acoustic_scale / lm_weight`` and the beams divided by ``lm_weight``, which
is the same search without rewriting the graph's weights.

The decoders hold the GIL while they search (two threads take as long as one
does twice), so ``num_jobs > 1`` uses worker processes. Where the platform
can fork, workers are forked: they inherit the loaded graph (pages shared
copy-on-write) and start in milliseconds, where ``spawn`` took seconds per
worker to re-import the caller's modules. Forking a process that holds torch
threads or a CUDA context is safe here because the workers only ever run
numpy and kaldi_decoder code. Elsewhere workers are spawned and load the
graph themselves; this module imports no torch, to keep that start short.
"""
from __future__ import annotations

import logging
import multiprocessing
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

import kaldi_decoder
import kaldifst
import numpy as np

from kdasr.decode.graph import EPS, check_graph, read_word_list
from kdasr.utils.io import Pathlike

if TYPE_CHECKING:
    import torch

    from kdasr.data.tokenizer import Tokenizer

NBest = list[tuple[str, float]]  # (text, score), best first


class _Search:
    """A loaded graph and one reusable kaldi_decoder search; lives in the caller or in a worker."""

    def __init__(self, graph_dir: str, beam: float, max_active: int, min_active: int, lattice_beam: float,
                 nbest: int) -> None:
        self.fst = kaldifst.StdVectorFst.read(str(Path(graph_dir) / "TLG.fst"))
        self.words = read_word_list(Path(graph_dir) / "words.txt")
        self.nbest = nbest
        if nbest == 1:
            opts = kaldi_decoder.FasterDecoderOptions(beam=beam, max_active=max_active, min_active=min_active)
            self.decoder = kaldi_decoder.FasterDecoder(self.fst, opts)
        else:
            cfg = kaldi_decoder.LatticeSimpleDecoderConfig(beam=beam, lattice_beam=lattice_beam)
            self.decoder = kaldi_decoder.LatticeSimpleDecoder(self.fst, cfg)

    def _text(self, word_ids: Sequence[int]) -> str:
        return " ".join(self.words[i] for i in word_ids if self.words[i] != EPS)

    def decode(self, feats: np.ndarray) -> NBest:
        """Search one utterance of scaled log-probs ``(T, V)``: ``(text, -cost)`` pairs; ``[("", 0.0)]`` for ``T == 0``."""
        if feats.shape[0] == 0:
            return [("", 0.0)]
        self.decoder.decode(kaldi_decoder.DecodableCtc(feats))
        if self.nbest == 1:
            ok, lat = self.decoder.get_best_path()
            if not ok or lat.num_states == 0:
                return [("", float("-inf"))]
            _, _, words, weight = kaldifst.get_linear_symbol_sequence(lat)
            return [(self._text(words), -(weight.value1 + weight.value2))]
        ok, lat = self.decoder.get_raw_lattice()
        if not ok or lat.num_states == 0:
            return [("", float("-inf"))]
        return self._nbest(lat)

    def _nbest(self, lat: kaldifst.Lattice) -> NBest:
        """Distinct word sequences of a raw lattice, best first.

        A raw lattice holds one path per alignment, so its n shortest paths
        would repeat the same words; projecting it on the words (total cost
        per arc), removing epsilons and determinizing keeps the best path of
        each word sequence, as Kaldi's lattice determinization does.
        """
        lines = []
        for line in lat.to_str().splitlines():
            parts = line.split()
            if len(parts) >= 4:
                cost = sum(float(x) for x in parts[4].split(",")) if len(parts) > 4 else 0.0
                lines.append(f"{parts[0]} {parts[1]} {parts[3]} {parts[3]} {cost}")
            else:
                cost = sum(float(x) for x in parts[1].split(",")) if len(parts) > 1 else 0.0
                lines.append(f"{parts[0]} {cost}")
        words = kaldifst.compile("\n".join(lines) + "\n", keep_state_numbering=True)
        kaldifst.rmepsilon(words)
        words = kaldifst.determinize(words)
        out = []
        for path in kaldifst.convert_nbest_to_vector(kaldifst.shortest_path(words, n=self.nbest)):
            _, _, osyms, weight = kaldifst.get_linear_symbol_sequence(path)
            out.append((self._text(osyms), -weight.value))
        out.sort(key=lambda x: -x[1])
        return out or [("", float("-inf"))]


_WORKER: Optional[_Search] = None


def _worker_init(*args) -> None:
    """Spawned worker: load the graph."""
    global _WORKER
    _WORKER = _Search(*args)


def _worker_adopt(search: _Search) -> None:
    """Forked worker: use the search (graph included) inherited from the parent."""
    global _WORKER
    _WORKER = search


def _worker_decode(feats: np.ndarray) -> NBest:
    assert _WORKER is not None
    return _WORKER.decode(feats)


class WfstDecoder:
    """Viterbi beam search of CTC log-probs through ``graph_dir/TLG.fst``.

    Call it as ``decoder(log_probs (B,T,V), lens (B,)) -> list[str]``;
    :meth:`hypotheses` gives ``nbest`` distinct hypotheses per utterance with their
    scores (needs ``nbest > 1`` at construction, which switches to
    ``LatticeSimpleDecoder``). Log-probs may live on any device; they are
    copied to the CPU. The default beam (10 nats) and ``max_active`` (3000)
    keep the search at a few percent of real time on one core for a 2k-word
    trigram (``tools/bench_decode.py``); a wider beam was 5-10x slower there
    for no gain in WER.
    """

    backend = "kaldi"

    def __init__(
        self,
        graph_dir: Pathlike,
        tokenizer: "Tokenizer",
        acoustic_scale: float = 1.0,
        beam: float = 10.0,
        max_active: int = 3000,
        min_active: int = 20,
        lm_weight: float = 1.0,
        lattice_beam: float = 8.0,
        num_jobs: int = 1,
        nbest: int = 1,
    ) -> None:
        self.graph_dir = Path(graph_dir)
        check_graph(self.graph_dir, tokenizer)
        if lm_weight <= 0 or acoustic_scale <= 0:
            raise ValueError(f"lm_weight and acoustic_scale must be positive, got {lm_weight}, {acoustic_scale}")
        if nbest < 1 or num_jobs < 1:
            raise ValueError(f"nbest and num_jobs must be at least 1, got {nbest}, {num_jobs}")
        self.vocab_size = tokenizer.vocab_size
        self.scale = acoustic_scale / lm_weight
        self.num_jobs = num_jobs
        self.lm_weight = lm_weight
        self._args = (str(self.graph_dir), beam / lm_weight, max_active, min_active, lattice_beam / lm_weight, nbest)
        self._search = _Search(*self._args)
        self._pool = None  # num_jobs > 1: worker processes, started on the first batch of 2+ utterances

    def _features(self, log_probs: "torch.Tensor", lens: "torch.Tensor") -> list[np.ndarray]:
        if log_probs.dim() != 3 or log_probs.shape[-1] != self.vocab_size:
            raise ValueError(f"log_probs must be (B, T, {self.vocab_size}), got {tuple(log_probs.shape)}")
        lp = log_probs.detach().float().cpu().numpy()
        lengths = [int(n) for n in lens.detach().cpu().tolist()]
        return [np.ascontiguousarray(lp[b, : lengths[b]] * self.scale, dtype=np.float32) for b in range(len(lengths))]

    def _run(self, feats: list[np.ndarray]) -> list[NBest]:
        if self.num_jobs == 1 or len(feats) < 2:
            return [self._search.decode(f) for f in feats]
        if self._pool is None:
            if "fork" in multiprocessing.get_all_start_methods():
                ctx = multiprocessing.get_context("fork")
                self._pool = ctx.Pool(self.num_jobs, initializer=_worker_adopt, initargs=(self._search,))
            else:
                ctx = multiprocessing.get_context("spawn")
                self._pool = ctx.Pool(self.num_jobs, initializer=_worker_init, initargs=self._args)
            logging.debug("started %d WFST decoding workers", self.num_jobs)
        return self._pool.map(_worker_decode, feats, chunksize=1)

    def __call__(self, log_probs: "torch.Tensor", lens: "torch.Tensor") -> list[str]:
        return [hyps[0][0] for hyps in self._run(self._features(log_probs, lens))]

    def hypotheses(self, log_probs: "torch.Tensor", lens: "torch.Tensor") -> list[NBest]:
        """Up to ``nbest`` distinct ``(text, score)`` per utterance, best first.

        ``score = acoustic_scale * log p(frames) - lm_weight * graph cost``
        (the search runs on that divided by ``lm_weight``; see the module notes).
        """
        return [[(text, score * self.lm_weight) for text, score in hyps]
                for hyps in self._run(self._features(log_probs, lens))]

    def close(self) -> None:
        """Stop the worker processes (also done when the decoder is garbage-collected)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the pool module may already be gone
            pass

    def __getstate__(self) -> dict:
        raise TypeError("WfstDecoder holds native decoder objects; build one per process instead of pickling it")
