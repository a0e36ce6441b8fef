#!/usr/bin/env python3
"""Real-time factor of each search method on random-but-peaky CTC posteriors.

Not a test: it prints a table. It builds a throw-away char lang dir and a
trigram TLG from synthetic sentences, draws posteriors whose best path
spells a sentence of that LM (the spelled token's logit sits around the
best Gaussian one, below it on a ``--confusion`` fraction of frames, so
greedy search makes errors for a lexicon and an LM to fix), and
times every method at each batch size: greedy, torchaudio's flashlight beam
search lexicon-free and with lexicon + KenLM (the peer), the WFST search
with 1 and 2 jobs, and the CUDA beam search when a GPU is present. RTF =
search seconds / audio seconds (40 ms output frames); WER is against the
sentences the posteriors were drawn from.

    python tools/bench_decode.py --duration 10 --num-utts 16 --batch-sizes 1,16
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Callable

import kaldialign
import torch

from kdasr.data.tokenizer import BLANK, UNK, WORD_SEP, Tokenizer, build_char_lang
from kdasr.decode import make_decoder
from kdasr.decode.graph import build_graph
from kdasr.models.common import FRAME_SHIFT

LETTERS = "ABCDEFGHIJKLMNOPRSTUVWY"


def synthetic_corpus(num_words: int, num_sentences: int, rng: random.Random) -> list[str]:
    """Sentences over ``num_words`` pseudo-words with a Zipf-like unigram and some fixed phrases."""
    vocab = sorted({"".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 8))) for _ in range(num_words)})
    weights = [1.0 / (r + 1) for r in range(len(vocab))]
    phrases = [rng.choices(vocab, weights, k=3) for _ in range(num_words // 4)]
    sentences = []
    for _ in range(num_sentences):
        words: list[str] = []
        while len(words) < rng.randint(4, 20):
            words += rng.choice(phrases) if rng.random() < 0.4 else rng.choices(vocab, weights, k=1)
        sentences.append(" ".join(words))
    return sentences


def peaky_posteriors(tok: Tokenizer, sentences: list[str], frames: int, margin: float, confusion: float,
                     gen: torch.Generator, rng: random.Random) -> tuple[torch.Tensor, list[str]]:
    """``(frames, V)`` log-probs for a frame path spelling the returned words (cut to fit).

    The path token's logit is the best other logit plus ``margin * (U(0,1) - confusion)``:
    on a ``confusion`` fraction of frames another token wins the argmax.
    """
    path: list[int] = []
    words: list[str] = []
    while True:
        for word in rng.choice(sentences).split():
            ids = ([tok.token_to_id["▁"]] if words else []) + tok.encode(word)
            seg: list[int] = []
            prev = path[-1] if path else None
            for i in ids:
                if i == prev or rng.random() < 0.6:
                    seg += [0] * rng.randint(1, 2)
                seg += [i] * rng.randint(1, 2)
                prev = i
            if len(path) + len(seg) + 1 > frames:
                path += [0] * (frames - len(path))
                logits = torch.randn(frames, tok.vocab_size, generator=gen)
                rows = torch.arange(frames)
                bonus = margin * (torch.rand(frames, generator=gen) - confusion)
                logits[rows, torch.tensor(path)] = logits.max(-1).values + bonus
                return logits.log_softmax(-1), words
            path += seg
            words.append(word)


def torchaudio_peer(tok: Tokenizer, graph: Path | None, beam_size: int, lm_weight: float) -> Callable:
    """torchaudio's ``ctc_decoder`` from files, lexicon-free (``graph`` None) or with lexicon + the graph's ARPA."""
    from torchaudio.models.decoder import ctc_decoder

    lexicon = None
    if graph is not None:
        lexicon = graph.parent / "peer_lexicon.txt"  # in the throw-away lang dir, not the graph
        spellings = (line.split() for line in (graph / "lexicon.txt").read_text(encoding="utf-8").splitlines())
        lexicon.write_text("".join(" ".join(p + [WORD_SEP]) + "\n" for p in spellings if len(p) > 1),
                           encoding="utf-8")
    decoder = ctc_decoder(lexicon=str(lexicon) if lexicon else None, tokens=list(tok.tokens),
                          lm=str(graph / "G.arpa") if graph is not None else None, beam_size=beam_size,
                          lm_weight=lm_weight * math.log(10.0), blank_token=BLANK, sil_token=WORD_SEP, unk_word=UNK)

    def run(lp: torch.Tensor, lens: torch.Tensor) -> list[str]:
        hyps = decoder(lp.float().contiguous(), lens.int())
        if graph is None:
            return [tok.decode(h[0].tokens.tolist()) if h else "" for h in hyps]
        return [" ".join(h[0].words) if h else "" for h in hyps]

    return run


def time_method(decoder: Callable, batches: list[tuple[torch.Tensor, torch.Tensor]], sync_cuda: bool) -> tuple[float, list[str]]:
    hyps: list[str] = []
    t0 = time.perf_counter()
    for lp, lens in batches:
        hyps += decoder(lp, lens)
    if sync_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0, hyps


def wer(refs: list[list[str]], hyps: list[str]) -> float:
    errors = sum(kaldialign.edit_distance(r, h.split())["total"] for r, h in zip(refs, hyps))
    return 100.0 * errors / max(1, sum(len(r) for r in refs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=10.0, help="Seconds of audio per utterance.")
    ap.add_argument("--num-utts", type=int, default=16)
    ap.add_argument("--batch-sizes", default="1,4,16", help="Comma-separated batch sizes.")
    ap.add_argument("--num-words", type=int, default=2000, help="LM vocabulary size.")
    ap.add_argument("--num-sentences", type=int, default=5000, help="LM training sentences.")
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--margin", type=float, default=3.0, help="Logit margin scale of the spelled token.")
    ap.add_argument("--confusion", type=float, default=0.05,
                    help="Fraction of frames whose argmax is not the spelled token.")
    ap.add_argument("--beam", type=float, default=10.0, help="WFST beam.")
    ap.add_argument("--max-active", type=int, default=3000, help="WFST max active states.")
    ap.add_argument("--beam-size", type=int, default=50, help="Flashlight beam size.")
    ap.add_argument("--lm-weight", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="Time each row this often and keep the fastest "
                    "(shared machines are noisy).")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    rng = random.Random(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory(prefix="bench_decode_") as tmp:
        lang = Path(tmp) / "lang_char"
        sentences = synthetic_corpus(args.num_words, args.num_sentences, rng)
        tok = build_char_lang(sentences, lang)
        t0 = time.perf_counter()
        graph = build_graph(lang, sentences, order=args.order)
        build_s = time.perf_counter() - t0
        frames = int(round(args.duration / FRAME_SHIFT))
        utts = [peaky_posteriors(tok, sentences, frames, args.margin, args.confusion, gen, rng) for _ in range(args.num_utts)]
        refs = [w for _, w in utts]
        audio = args.num_utts * frames * FRAME_SHIFT
        import yaml

        info = yaml.safe_load((graph / "graph.yaml").read_text())
        print(f"# {args.num_utts} utterances x {args.duration:.1f} s ({frames} frames), vocab {tok.vocab_size} "
              f"tokens, {info['lexicon_words']} words, {args.order}-gram; TLG {info['TLG']['states']} states / "
              f"{info['TLG']['arcs']} arcs, built in {build_s:.1f} s; torch threads {torch.get_num_threads()}")
        print(f"# CPU rows: {os.cpu_count()} cores; GPU rows: "
              + (torch.cuda.get_device_name(0) if cuda else "none (no CUDA device)"))

        methods: list[tuple[str, Callable[[], Callable], bool]] = [
            ("greedy", lambda: make_decoder("greedy", tok), False),
            ("beam lexicon-free (flashlight)", lambda: make_decoder("beam", tok, beam_size=args.beam_size), False),
            ("beam lexicon+LM (flashlight+KenLM)", lambda: make_decoder(
                "beam", tok, graph_dir=graph, beam_size=args.beam_size, lm_weight=args.lm_weight), False),
            ("peer: torchaudio ctc_decoder lex-free", lambda: torchaudio_peer(
                tok, None, args.beam_size, args.lm_weight), False),
            ("peer: torchaudio ctc_decoder lex+LM", lambda: torchaudio_peer(
                tok, graph, args.beam_size, args.lm_weight), False),
            ("wfst num_jobs=1", lambda: make_decoder("wfst", tok, graph_dir=graph, beam=args.beam,
                                                     max_active=args.max_active, lm_weight=args.lm_weight), False),
            ("wfst num_jobs=2", lambda: make_decoder("wfst", tok, graph_dir=graph, beam=args.beam,
                                                     max_active=args.max_active, lm_weight=args.lm_weight,
                                                     num_jobs=2), False),
        ]
        if cuda:
            methods += [("greedy (CUDA)", lambda: make_decoder("greedy", tok, device="cuda"), True),
                        ("beam lexicon-free (CUDA)", lambda: make_decoder("beam", tok, device="cuda", beam_size=10),
                         True)]
        print(f"{'method':40s} {'batch':>5s} {'RTF':>9s} {'x real time':>12s} {'WER %':>7s} {'setup s':>8s}")
        for name, factory, on_gpu in methods:
            t0 = time.perf_counter()
            decoder = factory()
            setup_s = time.perf_counter() - t0
            for bs in [int(b) for b in args.batch_sizes.split(",")]:
                batches = []
                for i in range(0, len(utts), bs):
                    lp = torch.stack([x for x, _ in utts[i: i + bs]])
                    lens = torch.full((lp.shape[0],), frames)
                    batches.append((lp.cuda(), lens.cuda()) if on_gpu else (lp, lens))
                time_method(decoder, batches[:1], on_gpu)  # warm-up: worker start, CUDA kernels
                runs = [time_method(decoder, batches, on_gpu) for _ in range(args.repeats)]
                secs, hyps = min(runs, key=lambda r: r[0])
                rtf = secs / audio
                print(f"{name:40s} {bs:5d} {rtf:9.5f} {1 / max(rtf, 1e-12):12.0f} {wer(refs, hyps):7.2f} {setup_s:8.2f}")
            close = getattr(decoder, "close", None)
            if close is not None:
                close()


if __name__ == "__main__":
    main()
