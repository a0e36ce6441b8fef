#!/usr/bin/env python3
"""Real-time factor of each search method on CTC posteriors.

Not a test: it prints tables. It builds a throw-away char lang dir and a
trigram TLG from synthetic sentences, draws posteriors whose best path
spells a sentence of that LM (the spelled token's logit sits around the
best Gaussian one, below it on a ``--confusion`` fraction of frames, so
greedy search makes errors for a lexicon and an LM to fix), and
times every method at each batch size: greedy, torchaudio's flashlight beam
search lexicon-free and with lexicon + KenLM (the peer), and the CUDA
greedy and beam searches when a GPU is present. RTF = search seconds /
audio seconds (40 ms output frames); WER is against the sentences the
posteriors were drawn from.

Then the WFST searches alone, on that graph, on ``--graph`` (e.g. the
demo's, searched with a trained model's log-probs, computed once and not
timed) and on a ``--large`` trigram over 100k generated words (built once
and cached in ``--cache-dir``; the first build takes long): kaldi-decoder
with 1 and 2 processes, and the batched torch search at
``--wfst-cpu-batches`` on the CPU and ``--wfst-gpu-batches`` on CUDA (peak
device memory printed per batch size). ``same %``: utterances whose words
equal kaldi-decoder's (1 process).

    python tools/bench_decode.py --duration 10 --num-utts 16 --batch-sizes 1,16
    python tools/bench_decode.py --num-utts 64 --graph egs/demo/data/lang_bpe/graph_<hash> \\
        --lang-dir egs/demo/data/lang_bpe --checkpoint egs/demo/exp/cnn_wb/best.pt \\
        --cuts egs/demo/data/fbank/cuts_test_wb.jsonl.gz --large
"""
from __future__ import annotations

import argparse
import itertools
import logging
import math
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Callable

import kaldialign
import numpy as np
import torch
import yaml

from kdasr.data.tokenizer import BLANK, UNK, WORD_SEP, Tokenizer, build_char_lang
from kdasr.decode import make_decoder
from kdasr.decode.graph import build_graph
from kdasr.models.common import FRAME_SHIFT

LETTERS = "ABCDEFGHIJKLMNOPRSTUVWY"


def synthetic_corpus(num_words: int, num_sentences: int, rng: random.Random) -> list[str]:
    """Sentences over ``num_words`` pseudo-words with a Zipf-like unigram and some fixed phrases."""
    vocab = sorted({"".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 8))) for _ in range(num_words)})
    cum = list(itertools.accumulate(1.0 / (r + 1) for r in range(len(vocab))))  # what choices() builds per call
    phrases = [rng.choices(vocab, cum_weights=cum, k=3) for _ in range(num_words // 4)]
    sentences = []
    for _ in range(num_sentences):
        words: list[str] = []
        while len(words) < rng.randint(4, 20):
            words += rng.choice(phrases) if rng.random() < 0.4 else rng.choices(vocab, cum_weights=cum, k=1)
        sentences.append(" ".join(words))
    return sentences


def large_corpus(num_words: int, num_tokens: int, seed: int) -> list[str]:
    """About ``num_tokens`` words of sentences over exactly ``num_words`` pseudo-words, each used at least once.

    Numpy draws (a Zipf-like unigram, 4-20 words a sentence) keep a corpus
    of millions of words to seconds; the words are also dealt out once in
    shuffled sentences, so the LM's vocabulary is the full ``num_words``.
    """
    rng = np.random.default_rng(seed)
    vocab: set[str] = set()
    while len(vocab) < num_words:
        for n, row in zip(rng.integers(3, 10, num_words), rng.integers(0, len(LETTERS), (num_words, 9))):
            vocab.add("".join(LETTERS[i] for i in row[:n]))
    words = np.array(sorted(vocab)[:num_words])
    p = 1.0 / np.arange(1, num_words + 1)
    draws = words[rng.permutation(num_words)][rng.choice(num_words, num_tokens, p=p / p.sum())]
    lengths = rng.integers(4, 21, num_tokens // 4 + 1)
    ends = np.cumsum(lengths)
    ends = ends[ends < num_tokens]
    cover = words[rng.permutation(num_words)]
    return [" ".join(x) for x in np.split(draws, ends)] + [" ".join(x) for x in np.array_split(cover, num_words // 10)]


def large_graph(cache: Path, num_words: int, num_tokens: int, seed: int) -> tuple[Tokenizer, Path, list[str], float]:
    """A char lang and a trigram TLG over ``large_corpus`` under ``cache`` (kept: ``kdasr graph`` caches by hash)."""
    sentences = large_corpus(num_words, num_tokens, seed)
    lang = cache / f"lang_char_{num_words}w_{num_tokens}t_{seed}"
    tok = Tokenizer.from_dir(lang) if (lang / "tokens.txt").is_file() else build_char_lang(sentences, lang)
    t0 = time.perf_counter()
    graph = build_graph(lang, sentences, order=3)
    return tok, graph, sentences, time.perf_counter() - t0


def arpa_ngrams(graph: Path) -> int:
    """Total n-gram count in the header of the graph's ``G.arpa``."""
    total = 0
    with open(graph / "G.arpa", encoding="utf-8") as f:
        for line in f:
            if line.startswith("ngram "):
                total += int(line.split("=")[1])
            elif line.startswith("\\1-grams"):
                break
    return total


def model_log_probs(checkpoint: Path, cuts_path: Path, lang: Path) -> tuple[list[torch.Tensor], list[list[str]], float]:
    """Per-utterance log-probs of a trained model over ``cuts_path`` (not timed), their references, audio seconds."""
    from lhotse import CutSet

    from kdasr.decode.run import iter_log_probs
    from kdasr.models.checkpoint import load_model

    cuts = CutSet.from_file(cuts_path).to_eager()
    model, _ = load_model(checkpoint, torch.device("cpu"))
    out, refs = [], []
    for batch, lp, lens in iter_log_probs(model, cuts, Tokenizer.from_dir(lang), torch.device("cpu"), 200.0):
        out += [lp[b, : int(n)].clone() for b, n in enumerate(lens)]
        refs += [t.split() for t in batch["texts"]]
    return out, refs, sum(c.duration for c in cuts)


def pad_batches(utts: list[torch.Tensor], bs: int, device: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(log_probs, lens)`` batches of ``bs`` utterances (the last one shorter), on ``device``."""
    out = []
    for i in range(0, len(utts), bs):
        chunk = utts[i: i + bs]
        lens = torch.tensor([x.shape[0] for x in chunk])
        lp = torch.zeros(len(chunk), int(lens.max()), chunk[0].shape[1])
        for b, x in enumerate(chunk):
            lp[b, : x.shape[0]] = x
        out.append((lp.to(device), lens.to(device)))
    return out


def wfst_rows(title: str, tok: Tokenizer, graph: Path, utts: list[torch.Tensor], refs: list[list[str]],
              audio: float, args: argparse.Namespace) -> None:
    """× real time of the WFST search only: kaldi-decoder (1, 2 processes) and the torch search per batch size.

    GPU batches larger than the utterance list cycle through it (the
    figure is throughput; ``same %`` then compares each copy).
    """
    cuda = torch.cuda.is_available()
    opts = {"beam": args.beam, "max_active": args.max_active, "lm_weight": args.lm_weight}
    rows: list[tuple[str, Callable[[], Callable], list[int], str]] = [
        ("kaldi-decoder num_jobs=1", lambda: make_decoder("wfst", tok, graph_dir=graph, backend="kaldi", **opts),
         [16], "cpu"),
        ("kaldi-decoder num_jobs=2", lambda: make_decoder("wfst", tok, graph_dir=graph, backend="kaldi",
                                                          num_jobs=2, **opts), [16], "cpu"),
        ("torch WFST (CPU)", lambda: make_decoder("wfst", tok, graph_dir=graph, backend="torch", device="cpu", **opts),
         [int(b) for b in args.wfst_cpu_batches.split(",")], "cpu"),
    ]
    if cuda:
        rows.append(("torch WFST (CUDA)", lambda: make_decoder("wfst", tok, graph_dir=graph, backend="torch",
                                                               device="cuda", **opts),
                     [int(b) for b in args.wfst_gpu_batches.split(",")], "cuda"))
    print(f"\n## {title}")
    print(f"{'search':28s} {'batch':>5s} {'RTF':>9s} {'x real time':>12s} {'WER %':>7s} {'same %':>7s} "
          f"{'setup s':>8s} {'peak GiB':>8s}")
    reference: list[str] = []
    for name, factory, sizes, device in rows:
        t0 = time.perf_counter()
        decoder = factory()
        setup_s = time.perf_counter() - t0
        for bs in sizes:
            pool = utts if bs <= len(utts) else [utts[i % len(utts)] for i in range(bs)]
            batches = pad_batches(pool, bs, device)
            time_method(decoder, batches[:1], device == "cuda")  # warm-up: worker start, kernels, caches
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            runs = [time_method(decoder, batches, device == "cuda") for _ in range(args.repeats)]
            peak = f"{torch.cuda.max_memory_allocated() / 2**30:8.2f}" if device == "cuda" else f"{'-':>8s}"
            secs, hyps = min(runs, key=lambda r: r[0])
            seconds_decoded = audio * len(pool) / len(utts)
            rtf = secs / seconds_decoded
            reference = reference or hyps
            same = 100.0 * sum(h == reference[i % len(reference)] for i, h in enumerate(hyps)) / len(hyps)
            cyc_refs = [refs[i % len(refs)] for i in range(len(pool))]
            print(f"{name:28s} {bs:5d} {rtf:9.5f} {1 / max(rtf, 1e-12):12.0f} {wer(cyc_refs, hyps):7.2f} "
                  f"{same:7.1f} {setup_s:8.2f} {peak}", flush=True)
        close = getattr(decoder, "close", None)
        if close is not None:
            close()


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
    ap.add_argument("--wfst-cpu-batches", default="1,16,64", help="Batch sizes of the torch WFST search on CPU.")
    ap.add_argument("--wfst-gpu-batches", default="64,256,1024", help="... and on CUDA (peak memory printed).")
    ap.add_argument("--graph", type=Path, help="Also time the WFST searches on this built graph (e.g. the demo's) "
                    "with the log-probs of --checkpoint over --cuts (read with --lang-dir).")
    ap.add_argument("--lang-dir", type=Path)
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--cuts", type=Path)
    ap.add_argument("--large", action="store_true", help="Also time them on a large trigram graph built from "
                    "generated text (cached in --cache-dir; the first build takes long).")
    ap.add_argument("--large-words", type=int, default=100_000)
    ap.add_argument("--large-tokens", type=int, default=1_500_000, help="Words of generated LM text.")
    ap.add_argument("--wfst-utts", type=int, default=64, help="Utterances searched on the large graph.")
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "kdasr" / "bench_decode")
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

        wfst_rows(f"WFST search, synthetic {info['lexicon_words']}-word {args.order}-gram (TLG {info['TLG']['arcs']} "
                  f"arcs), {args.num_utts} x {args.duration:.0f} s",
                  tok, graph, [x for x, _ in utts], refs, audio, args)
    if args.graph is not None:
        if args.checkpoint is None or args.cuts is None or args.lang_dir is None:
            ap.error("--graph needs --lang-dir, --checkpoint and --cuts (the model's log-probs are searched)")
        lps, real_refs, real_audio = model_log_probs(args.checkpoint, args.cuts, args.lang_dir)
        info = yaml.safe_load((args.graph / "graph.yaml").read_text())
        wfst_rows(f"WFST search, {args.graph} ({info['lexicon_words']} words, TLG {info['TLG']['arcs']} arcs), "
                  f"{len(lps)} utterances of {args.cuts} ({real_audio:.0f} s)", Tokenizer.from_dir(args.lang_dir),
                  args.graph, lps, real_refs, real_audio, args)
    if args.large:
        tok, graph, sentences, build_s = large_graph(args.cache_dir, args.large_words, args.large_tokens, args.seed)
        info = yaml.safe_load((graph / "graph.yaml").read_text())
        frames = int(round(args.duration / FRAME_SHIFT))
        utts = [peaky_posteriors(tok, sentences, frames, args.margin, args.confusion, gen, rng)
                for _ in range(args.wfst_utts)]
        wfst_rows(f"WFST search, large graph {graph}: {info['lexicon_words']} words, {arpa_ngrams(graph)} "
                  f"n-grams, TLG {info['TLG']['states']} states / {info['TLG']['arcs']} arcs (built in "
                  f"{info['build_seconds']:.0f} s, found in {build_s:.0f} s), {args.wfst_utts} x {args.duration:.0f} s",
                  tok, graph, [x for x, _ in utts], [w for _, w in utts], args.wfst_utts * frames * FRAME_SHIFT, args)


if __name__ == "__main__":
    main()
