"""Batched Viterbi beam search of CTC log-probs through a TLG, in torch (CPU or CUDA): the role k2 plays.

k2 cannot be installed here, and kaldi-decoder searches one utterance at a
time on the CPU; this search runs a whole batch in one frame loop, with
every step a tensor operation over the batch's active tokens × their arcs,
so the same code is checked on the CPU and is fast on a GPU.

The graph (``TLG.fst`` of ``kdasr graph``) is read once per device into
arc tensors sorted by source state, emitting and epsilon arcs apart
(:class:`GraphArcs`). Per frame:

1. the previous frame's tokens are pruned per utterance: cost within
   ``beam`` of the utterance's best, at most ``max_active`` tokens, at least
   ``min_active`` (Kaldi's ``FasterDecoder`` pruning);
2. their emitting arcs are expanded with the frame's log-probs; arcs whose
   cost is not within ``beam`` of the frame's best are dropped;
3. one token per (utterance, state) is kept: the cheapest, ties to the
   first in a deterministic order (candidates are sorted, then reduced with
   ``scatter_reduce(amin)`` twice: on the cost, then on the index);
4. epsilon arcs (G's back-off) are followed from the tokens that changed,
   until nothing improves or ``max_eps_hops`` hops.

Costs are Kaldi's: ``acoustic_scale * (-log p) + lm_weight * graph cost``,
the beam a bound on that sum, which is the search
:class:`kdasr.decode.wfst.WfstDecoder` runs (it divides everything by
``lm_weight``; the order of hypotheses is the same), with Kaldi's adaptive
beam: where ``max_active`` or ``min_active`` moved a frame's cutoff, the
next frame's expansions are kept within that spread (+ 0.5). Kaldi prunes
expansions against a running best, so it also keeps a few tokens admitted
before the best was found; where ``max_active`` binds hard (a handful of
tokens) the two searches can then differ, at the default beams they agree
(300 of 300 demo test utterances). At an utterance's last
frame its best token is chosen with the final weights, or without them if
no final state is active (as ``FasterDecoder.get_best_path`` does), and the
utterance leaves the batch: padding frames never touch it. Back-pointers
(parent record, output label) stay on the device and the words are traced
back for the whole batch at once at the end.
"""
from __future__ import annotations

import functools
import logging
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Optional, Union

import numpy as np
import torch

from kdasr.decode.graph import EPS, GraphError, check_graph, read_word_list
from kdasr.errors import KdasrError
from kdasr.utils.io import Pathlike

if TYPE_CHECKING:
    from kdasr.data.tokenizer import Tokenizer

NBest = list[tuple[str, float]]
_FST_MAGIC = 2125659606  # OpenFst's header magic
BEAM_DELTA = 0.5  # Kaldi's FasterDecoderOptions.beam_delta: slack of the adaptive beam


class DecodeMemoryError(KdasrError, MemoryError):
    """One utterance's search does not fit in device memory (``kdasr decode`` prints it as one line)."""


@dataclass
class GraphArcs:
    """A TLG as tensors on one device; arcs of each kind sorted by source state (CSR: ``start``/``count`` per state)."""

    num_states: int
    start_state: int
    final: torch.Tensor  # (S,) final cost, inf where not final
    emit_start: torch.Tensor  # (S,) int64
    emit_count: torch.Tensor  # (S,) int64
    emit_dst: torch.Tensor
    emit_ilabel: torch.Tensor  # token id + 1 (see kdasr.decode.graph)
    emit_olabel: torch.Tensor
    emit_weight: torch.Tensor
    eps_start: torch.Tensor
    eps_count: torch.Tensor
    eps_dst: torch.Tensor
    eps_olabel: torch.Tensor
    eps_weight: torch.Tensor

    @property
    def num_arcs(self) -> int:
        return int(self.emit_dst.numel() + self.eps_dst.numel())


def read_fst_arrays(path: Pathlike) -> dict[str, np.ndarray]:
    """Read an OpenFst ``vector``/``standard`` binary FST into numpy arrays (per-arc and per-state).

    Reading the file ourselves is one pass over the states' arc counts; the
    arcs are then sliced out of the buffer at once, where kaldifst's
    ``ArcIterator`` makes a Python call per arc (minutes for a large graph).
    """
    buf = Path(path).read_bytes()
    pos = 0

    def take(fmt: str) -> tuple:
        nonlocal pos
        vals = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return vals

    def string() -> str:
        nonlocal pos
        (n,) = take("<i")
        s = buf[pos:pos + n].decode("ascii", "replace")
        pos += n
        return s

    (magic,) = take("<i")
    if magic != _FST_MAGIC:
        raise GraphError(f"{path} is not an OpenFst binary FST")
    fst_type, arc_type = string(), string()
    if fst_type != "vector" or arc_type != "standard":
        raise GraphError(f"{path} is a {fst_type}/{arc_type} FST; the torch WFST search reads vector/standard ones")
    _version, flags, _props, start, num_states, _num_arcs = take("<iiQqqq")  # vector FSTs leave num_arcs 0
    if flags & 3:
        raise GraphError(f"{path} embeds symbol tables; write the TLG without them (as `kdasr graph` does)")
    base = pos  # state headers (12 bytes) and arcs (16 bytes) keep every field 4-byte aligned from here
    final = np.empty(num_states, np.float32)
    arc_word = np.empty(num_states, np.int64)
    count = np.empty(num_states, np.int64)
    for s in range(num_states):
        final[s], count[s] = struct.unpack_from("<fq", buf, pos)
        arc_word[s] = (pos + 12 - base) // 4
        pos += 12 + 16 * int(count[s])
    num_arcs = int(count.sum())
    if pos != len(buf):
        raise GraphError(f"{path}: arc table does not match its header (truncated or another format)")
    words = np.frombuffer(buf, np.int32, offset=base, count=(len(buf) - base) // 4)
    first = np.repeat(arc_word, count) + 4 * (np.arange(num_arcs) - np.repeat(np.cumsum(count) - count, count))
    return {
        "start": np.int64(start), "final": final, "src": np.repeat(np.arange(num_states), count),
        "ilabel": words[first].astype(np.int64), "olabel": words[first + 1].astype(np.int64),
        "weight": words[first + 2].view(np.float32).copy(), "dst": words[first + 3].astype(np.int64),
    }


def _csr(src: np.ndarray, num_states: int) -> tuple[np.ndarray, np.ndarray]:
    count = np.bincount(src, minlength=num_states).astype(np.int64)
    return np.cumsum(count) - count, count


@functools.lru_cache(maxsize=2)
def load_graph_arcs(path: str, device: str) -> GraphArcs:
    """The TLG at ``path`` as :class:`GraphArcs` on ``device``, read once per (file, device)."""
    a = read_fst_arrays(path)
    n = len(a["final"])
    if a["start"] < 0 or n == 0:
        raise GraphError(f"{path} has no start state")
    order = np.argsort(a["src"], kind="stable")  # already by source; stable keeps the file's arc order
    eps = a["ilabel"][order] == 0
    e_idx, p_idx = order[~eps], order[eps]
    e_start, e_count = _csr(a["src"][e_idx], n)
    p_start, p_count = _csr(a["src"][p_idx], n)
    dev = torch.device(device)

    def t(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(dev)

    return GraphArcs(
        num_states=n, start_state=int(a["start"]), final=t(a["final"]),
        emit_start=t(e_start), emit_count=t(e_count), emit_dst=t(a["dst"][e_idx]),
        emit_ilabel=t(a["ilabel"][e_idx]), emit_olabel=t(a["olabel"][e_idx]), emit_weight=t(a["weight"][e_idx]),
        eps_start=t(p_start), eps_count=t(p_count), eps_dst=t(a["dst"][p_idx]), eps_olabel=t(a["olabel"][p_idx]),
        eps_weight=t(a["weight"][p_idx]),
    )


@dataclass
class _Trace:
    """Back-pointer records of all frames so far (global index = position in their concatenation) and the
    chosen final record and score per utterance."""

    final_record: torch.Tensor
    final_score: torch.Tensor
    parents: list[torch.Tensor] = field(default_factory=list)
    olabels: list[torch.Tensor] = field(default_factory=list)
    n: int = 0


class _Tokens(NamedTuple):
    """Tokens of one frame, sorted by ``key = utterance * num_states + state`` (one per key).

    ``prev``: global index of the previous frame's record the token came
    from (-1: it came by epsilon, or it is the start); ``eps``: index in this
    frame's list of the token it came from by an epsilon arc (-1: none);
    ``olabel``: output label of the last arc.
    """

    key: torch.Tensor
    cost: torch.Tensor
    prev: torch.Tensor
    eps: torch.Tensor
    olabel: torch.Tensor


def _best_per_key(keys: torch.Tensor, costs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(unique keys, index of the winner per key, inverse)``: cheapest candidate, ties to the lowest index."""
    uniq, inv = torch.unique(keys, sorted=True, return_inverse=True)
    best = torch.full((len(uniq),), float("inf"), dtype=costs.dtype, device=costs.device)
    best.scatter_reduce_(0, inv, costs, "amin")
    idx = torch.arange(len(keys), device=keys.device)
    is_best = costs == best[inv]
    win = torch.full((len(uniq),), len(keys), dtype=torch.long, device=keys.device)
    win.scatter_reduce_(0, inv[is_best], idx[is_best], "amin")
    return uniq, win, inv


def _expand(start: torch.Tensor, count: torch.Tensor, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(token index, arc index)`` of every arc leaving each state in ``states``."""
    cnt = count[states]
    rep = torch.repeat_interleave(torch.arange(len(states), device=states.device), cnt)
    offset = torch.arange(len(rep), device=states.device) - (torch.cumsum(cnt, 0) - cnt)[rep]
    return rep, start[states][rep] + offset


class TorchWfstDecoder:
    """Batched Viterbi beam search through ``graph_dir/TLG.fst`` on ``device`` (1-best).

    Same call and options as :class:`kdasr.decode.wfst.WfstDecoder`
    (``beam``, ``max_active``, ``min_active``, ``acoustic_scale``,
    ``lm_weight``), plus ``max_eps_hops``, a bound on epsilon arcs followed
    per frame (a back-off chain of an n-gram LM has fewer than its order).
    A batch that runs out of device memory is decoded in halves.
    """

    backend = "torch"

    def __init__(
        self,
        graph_dir: Pathlike,
        tokenizer: "Tokenizer",
        acoustic_scale: float = 1.0,
        beam: float = 10.0,
        max_active: int = 3000,
        min_active: int = 20,
        lm_weight: float = 1.0,
        max_eps_hops: int = 10,
        nbest: int = 1,
        device: Union[str, torch.device] = "cpu",
    ) -> None:
        self.graph_dir = Path(graph_dir)
        check_graph(self.graph_dir, tokenizer)
        if lm_weight <= 0 or acoustic_scale <= 0 or beam <= 0:
            raise ValueError(f"lm_weight, acoustic_scale and beam must be positive, got {lm_weight}, "
                             f"{acoustic_scale}, {beam}")
        if not 0 <= min_active < max_active or max_eps_hops < 1:
            raise ValueError(f"need 0 <= min_active < max_active and max_eps_hops >= 1, got {min_active}, "
                             f"{max_active}, {max_eps_hops}")
        if nbest != 1:
            raise ValueError(f"the torch WFST search gives the 1-best only (nbest={nbest}); use backend=kaldi")
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("the torch WFST search on cuda needs a CUDA GPU; none is available (use device=cpu)")
        self.vocab_size = tokenizer.vocab_size
        self.acoustic_scale, self.lm_weight, self.beam = acoustic_scale, lm_weight, beam
        self.max_active, self.min_active, self.max_eps_hops = max_active, min_active, max_eps_hops
        self.words = read_word_list(self.graph_dir / "words.txt")
        try:
            self.graph = load_graph_arcs(str((self.graph_dir / "TLG.fst").resolve()), str(self.device))
        except torch.OutOfMemoryError:
            size = (self.graph_dir / "TLG.fst").stat().st_size
            raise DecodeMemoryError(f"the graph {self.graph_dir / 'TLG.fst'} ({size / 2**30:.2f} GiB on disk, about "
                                    f"twice that as tensors) does not fit in the memory of {self.device}") from None

    # -- public calls ------------------------------------------------------------------------

    def __call__(self, log_probs: torch.Tensor, lens: torch.Tensor) -> list[str]:
        return [hyps[0][0] for hyps in self.hypotheses(log_probs, lens)]

    def hypotheses(self, log_probs: torch.Tensor, lens: torch.Tensor) -> list[NBest]:
        """``[(text, score)]`` per utterance; ``score = acoustic_scale * log p - lm_weight * graph cost``."""
        if log_probs.dim() != 3 or log_probs.shape[-1] != self.vocab_size:
            raise ValueError(f"log_probs must be (B, T, {self.vocab_size}), got {tuple(log_probs.shape)}")
        lp = log_probs.detach().to(self.device, torch.float32)
        lengths = torch.as_tensor(lens).detach().to(self.device, torch.long).clamp(max=lp.shape[1])
        valid = torch.arange(lp.shape[1], device=self.device)[None, :] < lengths[:, None]
        nan = (torch.isnan(lp).any(-1) & valid).any(-1)
        if bool(nan.any()):
            raise ValueError(f"log-probs of utterance {int(nan.nonzero()[0])} of the batch hold NaN")
        word_ids, scores = self._search_split(lp, lengths)
        return [[(" ".join(self.words[i] for i in ids if self.words[i] != EPS), s)]
                for ids, s in zip(word_ids, scores)]

    # -- the search ------------------------------------------------------------------------

    def _search_split(self, lp: torch.Tensor, lens: torch.Tensor) -> tuple[list[list[int]], list[float]]:
        """:meth:`search`, halving the batch while the device runs out of memory."""
        try:
            return self.search(lp, lens)
        except torch.OutOfMemoryError as e:
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            asked = re.search(r"[Tt]ried to allocate ([0-9.]+ [KMGT]?i?B)", str(e))
            if len(lens) == 1:
                raise DecodeMemoryError(
                    f"the WFST search of one utterance of {int(lens[0])} frames ran out of memory on {self.device}"
                    f" (asked for {asked.group(1) if asked else 'more'}): lower max_active or beam") from None
            half = (len(lens) + 1) // 2
            logging.warning("WFST search of a batch of %d ran out of memory on %s (asked for %s); decoding it in "
                            "halves", len(lens), self.device, asked.group(1) if asked else "more")
            a, b = self._search_split(lp[:half], lens[:half]), self._search_split(lp[half:], lens[half:])
            return a[0] + b[0], a[1] + b[1]

    def search(self, lp: torch.Tensor, lens: torch.Tensor) -> tuple[list[list[int]], list[float]]:
        """Word ids and score of the best path of each utterance of ``lp (B, T, V)`` (``lens (B,)`` frames).

        An utterance of 0 frames gives ``([], 0.0)``, one whose every path was
        pruned or blocked ``([], -inf)``, as the kaldi-decoder backend does.
        """
        g, dev = self.graph, lp.device
        B, T, V = lp.shape
        S = g.num_states
        trace = _Trace(final_record=torch.full((B,), -1, dtype=torch.long, device=dev),
                       final_score=torch.where(lens == 0, 0.0, float("-inf")))
        lens_cpu = lens.cpu()
        ends_at = {int(t): (lens == t + 1) for t in torch.unique(lens_cpu[lens_cpu > 0] - 1).tolist()}
        live = (lens > 0).nonzero().squeeze(1)
        n0 = len(live)
        none = torch.full((n0,), -1, dtype=torch.long, device=dev)
        tok = _Tokens(key=live * S + g.start_state, cost=torch.zeros(n0, device=dev), prev=none, eps=none,
                      olabel=torch.zeros(n0, dtype=torch.long, device=dev))
        tok, hops = self._closure(tok, torch.full((B,), self.beam, device=dev))
        key, cost, prev, beam = self._store(tok, hops, lens[tok.key // S] > 0, None, trace)
        frames = lp.transpose(0, 1).contiguous()  # (T, B, V): one frame of the batch is a view
        for t in range(T):
            if len(key) == 0:
                break
            tok, cutoff = self._emit(key, cost, prev, frames[t].view(-1), V, B, beam)
            tok, hops = self._closure(tok, cutoff)
            key, cost, prev, beam = self._store(tok, hops, lens[tok.key // S] > t + 1, ends_at.get(t), trace)
        return self._traceback(trace.parents, trace.olabels, trace.final_record), trace.final_score.tolist()

    def _store(self, tok: _Tokens, hops: int, alive: torch.Tensor, ending: Optional[torch.Tensor], trace: "_Trace"
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Record a frame's tokens and return ``(key, cost, prev, beam)`` of those the next frame expands.

        ``alive``: per token, whether its utterance has frames left; ``ending``: per utterance,
        whether it ends at this frame, so its best final token is chosen. The
        records kept are the tokens to expand, those chosen, and their
        epsilon ancestors in this frame (the back-pointers pass through them).
        """
        B = len(trace.final_record)
        utt = tok.key // self.graph.num_states
        keep, beam = self._prune(tok.cost, utt, B)
        keep &= alive
        needed = keep.clone()
        chosen = None
        if ending is not None:
            sel = ending[utt].nonzero().squeeze(1)
            if len(sel):
                chosen, score = self._final_choice(tok, sel, utt[sel], B)
                needed[chosen] = True
        for _ in range(hops):
            src = tok.eps[needed & (tok.eps >= 0)]
            if len(src) == 0:
                break
            needed[src] = True
        new_index = torch.cumsum(needed, 0) - 1
        stored = needed.nonzero().squeeze(1)
        eps = tok.eps[stored]
        trace.parents.append(torch.where(eps >= 0, trace.n + new_index[eps.clamp(min=0)], tok.prev[stored]))
        trace.olabels.append(tok.olabel[stored])
        if chosen is not None:
            trace.final_record[utt[chosen]] = trace.n + new_index[chosen]
            trace.final_score[utt[chosen]] = score
        kept = keep.nonzero().squeeze(1)
        out = tok.key[kept], tok.cost[kept], trace.n + new_index[kept], beam
        trace.n += len(stored)
        return out

    def _emit(self, key: torch.Tensor, cost: torch.Tensor, prev: torch.Tensor, lp_t: torch.Tensor, V: int, B: int,
              beam: torch.Tensor) -> tuple[_Tokens, torch.Tensor]:
        """Expand the emitting arcs of the tokens ``(key, cost, prev)`` with one frame's log-probs ``lp_t``
        (B * V,); keep one token per state.

        New tokens are kept within ``beam`` (per utterance, from :meth:`_prune`) of the utterance's best;
        returns them and that cutoff, which the epsilon closure uses too.
        """
        g = self.graph
        S = g.num_states
        utt, state = key // S, key % S
        rep, arc = _expand(g.emit_start, g.emit_count, state)
        u = utt[rep]
        ac = lp_t[u * V + g.emit_ilabel[arc] - 1]
        cost = cost[rep] + self.lm_weight * g.emit_weight[arc] - self.acoustic_scale * ac
        best = torch.full((B,), float("inf"), device=cost.device).scatter_reduce_(0, u, cost, "amin")
        cutoff = best + beam
        ok = (cost < cutoff[u]).nonzero().squeeze(1)
        rep, arc, u, cost = rep[ok], arc[ok], u[ok], cost[ok]
        keys, win, _ = _best_per_key(u * S + g.emit_dst[arc], cost)
        new = _Tokens(key=keys, cost=cost[win], prev=prev[rep[win]],
                      eps=torch.full((len(keys),), -1, dtype=torch.long, device=keys.device),
                      olabel=g.emit_olabel[arc[win]])
        return new, cutoff

    def _closure(self, tok: _Tokens, cutoff: torch.Tensor) -> tuple[_Tokens, int]:
        """Follow epsilon arcs from tokens that are new or improved until none improves; return tokens, hops."""
        g = self.graph
        S = g.num_states
        frontier = torch.ones(len(tok.key), dtype=torch.bool, device=tok.key.device)
        hops = 0
        while hops < self.max_eps_hops:
            src = frontier.nonzero().squeeze(1)
            rep, arc = _expand(g.eps_start, g.eps_count, tok.key[src] % S)
            if len(arc) == 0:
                break
            src = src[rep]
            utt = tok.key[src] // S
            cost = tok.cost[src] + self.lm_weight * g.eps_weight[arc]
            ok = (cost < cutoff[utt]).nonzero().squeeze(1)
            if len(ok) == 0:
                break
            src, arc, utt, cost = src[ok], arc[ok], utt[ok], cost[ok]
            n = len(tok.key)
            # Only candidates better than the token already at their state can change anything (tok.key is sorted).
            cand = utt * S + g.eps_dst[arc]
            at = torch.searchsorted(tok.key, cand).clamp(max=n - 1)
            better = ((tok.key[at] != cand) | (cost < tok.cost[at])).nonzero().squeeze(1)
            if len(better) == 0:
                break
            src, arc, cost, cand = src[better], arc[better], cost[better], cand[better]
            keys, win, inv = _best_per_key(torch.cat([tok.key, cand]), torch.cat([tok.cost, cost]))
            old = win < n
            w_old, w_new = win.clamp(max=n - 1), (win - n).clamp(min=0)
            moved = inv[:n]  # new position of each old token
            old_eps = torch.where(tok.eps >= 0, moved[tok.eps.clamp(min=0)], -1)
            tok = _Tokens(
                key=keys, cost=torch.where(old, tok.cost[w_old], cost[w_new]),
                prev=torch.where(old, tok.prev[w_old], -1),
                eps=torch.where(old, old_eps[w_old], moved[src[w_new]]),
                olabel=torch.where(old, tok.olabel[w_old], g.eps_olabel[arc[w_new]]),
            )
            frontier = ~old
            hops += 1
        else:
            if bool(frontier.any()):
                logging.debug("epsilon closure stopped after %d hops with tokens still improving", hops)
        return tok, hops

    def _prune(self, cost: torch.Tensor, utt: torch.Tensor, B: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens to expand, and the beam for their expansions, per utterance (Kaldi's ``GetCutoff``).

        Kept: cost within ``beam`` of the utterance's best, but at most the
        ``max_active`` best and at least the ``min_active`` best. Where one of
        the bounds moved the cutoff, the next frame's beam follows it (plus
        ``BEAM_DELTA``), as Kaldi's adaptive beam does; where an utterance
        has no more than ``min_active`` tokens nothing is pruned.
        """
        inf = float("inf")
        counts = torch.bincount(utt, minlength=B)
        best = torch.full((B,), inf, device=cost.device).scatter_reduce_(0, utt, cost, "amin")
        # One sort by (utterance, cost): the cost relative to the utterance's best, capped, below 2^20 apart.
        rel = (cost - best[utt]).double().clamp(max=2.0**19)
        order = torch.argsort(utt.double() * 2.0**20 + rel, stable=True)
        first = torch.cumsum(counts, 0) - counts
        ranked = cost[order]
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order), device=cost.device) - first[utt[order]]

        def kth(k: int) -> torch.Tensor:  # cost of each utterance's token of rank k, inf where it has none
            at = (first + k).clamp(max=max(len(ranked) - 1, 0))
            return torch.where(counts > k, ranked[at] if len(ranked) else inf, inf)

        cutoff = best + self.beam
        beam = torch.full((B,), self.beam, device=cost.device)
        max_cut = kth(self.max_active)
        tighter = max_cut < cutoff
        beam = torch.where(tighter, max_cut - best + BEAM_DELTA, beam)
        cutoff = torch.where(tighter, max_cut, cutoff)
        min_cut = kth(self.min_active) if self.min_active > 0 else torch.where(counts > 0, best, inf)
        min_cut = torch.where(counts > self.min_active, min_cut, inf)
        looser = min_cut > cutoff
        beam = torch.where(looser, min_cut - best + BEAM_DELTA, beam)
        cutoff = torch.where(looser, min_cut, cutoff)
        return cost < cutoff[utt], beam

    def _final_choice(self, tok: _Tokens, sel: torch.Tensor, utt: torch.Tensor, B: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token index and score of the best of ``sel`` per utterance, final weights counted where any is final."""
        cost = tok.cost[sel]
        with_final = cost + self.lm_weight * self.graph.final[tok.key[sel] % self.graph.num_states]
        any_final = torch.zeros(B, dtype=torch.bool, device=cost.device)
        any_final[utt[torch.isfinite(with_final)]] = True
        eff = torch.where(any_final[utt], with_final, cost)
        _, win, _ = _best_per_key(utt, eff)
        return sel[win], -eff[win]

    def _traceback(self, parents: list[torch.Tensor], olabels: list[torch.Tensor], final: torch.Tensor
                   ) -> list[list[int]]:
        """Output labels from each utterance's final record back to the start, all utterances at once."""
        parent = torch.cat(parents) if parents else torch.zeros(0, dtype=torch.long, device=final.device)
        olabel = torch.cat(olabels) if olabels else parent
        cur = final.clone()
        labels = []
        for _ in range(len(parent) + 1):  # a chain visits each record once at most
            on = cur >= 0
            if not bool(on.any()):
                break
            at = cur.clamp(min=0)
            labels.append(torch.where(on, olabel[at], 0))
            cur = torch.where(on, parent[at], -1)
        if not labels:
            return [[] for _ in range(len(final))]
        lab = torch.stack(labels, 1).flip(1).cpu().numpy()
        return [[int(i) for i in row if i != 0] for row in lab]
