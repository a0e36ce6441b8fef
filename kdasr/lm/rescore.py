"""N-best rescoring with an n-gram and an LSTM LM (the library side of ``kdasr rescore``).

Input: the ``nbest-*.txt`` of ``kdasr decode --opt nbest=K`` (beam or WFST),
one line per hypothesis ``cut_id<TAB>rank<TAB>score<TAB>text``, where
``score = acoustic + w_dec * ln P_ngram (+ word_score * words for beam)``.
The n-gram's natural-log probability of each hypothesis is recomputed from
the ARPA file the decode used (KenLM, through flashlight-text), so that::

    acoustic = score - w_dec * ngram - word_score * words
    total    = acoustic + a * ngram + b * lstm + c * words      (c: a per-word bonus)

is scanned over a grid of ``(a, b, c)`` on a dev set and the weights of the
lowest dev WER (ties: the first in grid order, i.e. the smallest weights
listed first) are applied to the test set. For beam searches the acoustic
part is exact (flashlight scores words with the same KenLM); a WFST's graph
cost may take a backoff arc where the ARPA has the n-gram, which moves that
part by the difference. ``b = 0`` rows are the n-gram-only rescoring, so
every run also reports what the LSTM adds over the n-gram alone.
"""
from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import yaml
from lhotse import CutSet

from kdasr.decode.graph import arpa_words
from kdasr.lm.data import LmDataError, Vocab
from kdasr.lm.score import load_lms, sentence_logprobs
from kdasr.score.wer import compute_wer, read_text_file, write_errs, write_recogs, write_wer_summary
from kdasr.utils.io import Pathlike, atomic_write_text

NBest = dict[str, list[tuple[str, float]]]
LN10 = math.log(10.0)


def read_nbest(path: Pathlike) -> NBest:
    """``cut_id -> [(text, score), ...]`` in rank order; a malformed line is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise LmDataError(f"N-best file {path} does not exist")
    out: NBest = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split("\t")
        if len(parts) != 4:
            raise LmDataError(f"{path}:{lineno}: expected cut_id<TAB>rank<TAB>score<TAB>text, got {line!r}")
        try:
            score = float(parts[2])
        except ValueError:
            raise LmDataError(f"{path}:{lineno}: score {parts[2]!r} is not a number") from None
        out.setdefault(parts[0], []).append((parts[3].strip(), score))
    if not out:
        raise LmDataError(f"N-best file {path} is empty")
    return out


def references(path: Pathlike) -> dict[str, str]:
    """Utterance id -> transcript, from a lhotse cut manifest (``.jsonl.gz``) or a Kaldi ``text`` file."""
    if str(path).endswith((".jsonl", ".jsonl.gz")):
        return {c.id: " ".join(s.text or "" for s in c.supervisions).strip() for c in CutSet.from_file(path)}
    return {k: " ".join(v) for k, v in read_text_file(path).items()}


class NgramScorer:
    """Natural-log sentence probabilities (``</s>`` included) from an ARPA file via KenLM."""

    def __init__(self, arpa: Pathlike) -> None:
        from flashlight.lib.text.decoder.kenlm import KenLM
        from flashlight.lib.text.dictionary import Dictionary

        self.path = Path(arpa)
        if not self.path.is_file():
            raise FileNotFoundError(f"ARPA file {self.path} does not exist")
        words = [w for w in arpa_words(self.path) if w not in ("<s>", "</s>", "<unk>")]
        self.dict = Dictionary(["<unk>"] + words)
        self.lm = KenLM(str(self.path), self.dict)

    def __call__(self, text: str) -> float:
        state = self.lm.start(False)
        total = 0.0
        for w in text.split():
            state, s = self.lm.score(state, self.dict.get_index(w) if self.dict.contains(w) else 0)
            total += s
        _, s = self.lm.finish(state)
        return (total + s) * LN10


def hypothesis_features(nbest: NBest, ngram: NgramScorer, decode_lm_weight: float, word_score: float,
                        lm: Optional[tuple[Any, Vocab]]) -> dict[str, list[dict[str, float]]]:
    """Per hypothesis: ``text``, ``acoustic``, ``ngram``, ``lstm`` (0 without an LM), ``words``."""
    texts = sorted({t for hyps in nbest.values() for t, _ in hyps})
    ng = {t: ngram(t) for t in texts}
    lstm = dict.fromkeys(texts, 0.0)
    if lm is not None:
        model, vocab = lm
        lstm = dict(zip(texts, sentence_logprobs(model, vocab, [vocab.encode(t.split()) for t in texts])))
    out = {}
    for cid, hyps in nbest.items():
        out[cid] = [{"text": t, "acoustic": s - decode_lm_weight * ng[t] - word_score * len(t.split()),
                     "ngram": ng[t], "lstm": lstm[t], "words": len(t.split())} for t, s in hyps]
    return out


def pick(features: Mapping[str, list[dict]], a: float, b: float, c: float) -> dict[str, str]:
    """The best hypothesis of each utterance under ``acoustic + a ngram + b lstm + c words``."""
    def total(h: dict) -> float:
        return h["acoustic"] + a * h["ngram"] + b * h["lstm"] + c * h["words"]

    return {cid: max(hyps, key=total)["text"] if hyps else "" for cid, hyps in features.items()}


def _errors(refs: Mapping[str, str], hyps: Mapping[str, str]) -> tuple[int, int]:
    stats = compute_wer({k: refs[k].split() for k in hyps}, {k: v.split() for k, v in hyps.items()})
    return stats.errors, stats.ref_words


def _check_refs(nbest: NBest, refs: Mapping[str, str], where: str) -> None:
    missing = sorted(set(nbest) - set(refs))
    if missing:
        raise LmDataError(f"{len(missing)} N-best utterances have no transcript in {where}, e.g. {missing[:3]}")


def scan(features: Mapping[str, list[dict]], refs: Mapping[str, str], ngram_weights: Sequence[float],
         lm_weights: Sequence[float], word_bonuses: Sequence[float]) -> list[dict[str, float]]:
    """WER of every ``(ngram_weight, lm_weight, word_bonus)`` in grid order."""
    table = []
    for a, b, c in itertools.product(ngram_weights, lm_weights, word_bonuses):
        e, n = _errors(refs, pick(features, a, b, c))
        table.append({"ngram_weight": a, "lm_weight": b, "word_bonus": c, "wer": 100.0 * e / max(n, 1),
                      "errors": e, "ref_words": n})
    return table


def best_row(table: Iterable[dict[str, float]]) -> dict[str, float]:
    return min(table, key=lambda r: r["errors"])


def rescore(
    dev_nbest: Pathlike,
    dev_cuts: Pathlike,
    test_nbest: Pathlike,
    test_cuts: Pathlike,
    arpa: Pathlike,
    out_dir: Pathlike,
    lm_checkpoints: Sequence[Pathlike] = (),
    decode_lm_weight: float = 1.0,
    decode_word_score: float = 0.0,
    ngram_weights: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5),
    lm_weights: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5),
    word_bonuses: Sequence[float] = (-1.0, 0.0, 1.0, 2.0, 3.0),
    name: str = "test",
    device: Any = "cpu",
) -> dict:
    """Scan weights on the dev N-best, rescore the test N-best, write icefall-style results; return the summary.

    Several ``lm_checkpoints`` rescore as one ensemble (averaged distributions)."""
    out_dir = Path(out_dir)
    lm = load_lms(lm_checkpoints, device) if lm_checkpoints else None
    if lm is None and any(w != 0 for w in lm_weights):
        lm_weights = [0.0]
    ngram = NgramScorer(arpa)
    sets = {}
    for part, nb_path, cuts_path in (("dev", dev_nbest, dev_cuts), ("test", test_nbest, test_cuts)):
        nbest, refs = read_nbest(nb_path), references(cuts_path)
        _check_refs(nbest, refs, str(cuts_path))
        sets[part] = (hypothesis_features(nbest, ngram, decode_lm_weight, decode_word_score, lm), refs, nbest)
    dev_feats, dev_refs, _ = sets["dev"]
    table = scan(dev_feats, dev_refs, ngram_weights, lm_weights, word_bonuses)
    best = best_row(table)
    best_ngram = best_row(r for r in table if r["lm_weight"] == 0.0) if 0.0 in lm_weights else None
    test_feats, test_refs, test_nbest_lists = sets["test"]
    refs_split = {k: test_refs[k].split() for k in test_nbest_lists}
    results = {}
    rows = [("first_pass", None)] + ([("ngram_only", best_ngram)] if best_ngram else []) + \
           ([("lstm", best)] if lm is not None else [])
    for tag, row in rows:
        hyps = ({cid: hyps[0][0] for cid, hyps in test_nbest_lists.items()} if row is None
                else pick(test_feats, row["ngram_weight"], row["lm_weight"], row["word_bonus"]))
        stats = compute_wer(refs_split, {k: v.split() for k, v in hyps.items()})
        results[tag] = {"wer": round(stats.wer, 2), "errors": stats.errors, "ref_words": stats.ref_words}
        if row is not None:
            results[tag]["weights"] = {k: row[k] for k in ("ngram_weight", "lm_weight", "word_bonus")}
            results[tag]["dev_wer"] = round(row["wer"], 2)
        if tag == rows[-1][0]:
            t = f"{name}-rescore"
            write_recogs(out_dir / f"recogs-{t}.txt", refs_split, {k: v.split() for k, v in hyps.items()})
            write_errs(out_dir / f"errs-{t}.txt", stats)
            write_wer_summary(out_dir / f"wer-summary-{t}.txt", {tag: stats.wer})
    dev_first = compute_wer({k: dev_refs[k].split() for k in sets["dev"][2]},
                            {k: h[0][0].split() for k, h in sets["dev"][2].items()})
    summary = {
        "dev_nbest": str(dev_nbest), "test_nbest": str(test_nbest), "arpa": str(arpa),
        "lm": [str(p) for p in lm_checkpoints],
        "lm_num_params": lm[0].num_params() if lm else None,
        "decode_lm_weight": decode_lm_weight, "decode_word_score": decode_word_score,
        "mean_nbest": sum(len(h) for h in test_nbest_lists.values()) / max(len(test_nbest_lists), 1),
        "dev_first_pass_wer": round(dev_first.wer, 2), "test": results,
    }
    atomic_write_text(out_dir / "rescore.yaml", yaml.safe_dump(summary, sort_keys=False))
    atomic_write_text(out_dir / "rescore-scan-dev.yaml", yaml.safe_dump(table, sort_keys=False))
    logging.info("rescore %s: %s", name, ", ".join(f"{k} WER {v['wer']:.2f}" for k, v in results.items()))
    return summary
