"""Markdown tables of LM experiments: perplexities (``kdasr lm eval --out``) and rescoring WERs (``kdasr rescore``)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import yaml

from kdasr.utils.io import Pathlike


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text()) or {}


def perplexity_table(exp_dirs: Sequence[Pathlike], eval_name: str = "ppl.yaml") -> str:
    """One row per LM experiment: parameters, share of the first row's (the reference teacher), dev/test ppl,
    training seconds; texts are keyed by file name (``dev.txt``, ``test.txt``)."""
    rows, ref_params = [], None
    for d in map(Path, exp_dirs):
        doc = _load(d / eval_name)
        texts = {Path(k).stem: v for k, v in doc.get("texts", {}).items()}
        summary = _load(d / "train_summary.yaml") if (d / "train_summary.yaml").is_file() else {}
        params = next(iter(texts.values()))["num_params"] if texts else summary.get("num_params", 0)
        ref_params = ref_params or params
        rows.append((d.name, params, texts, summary.get("train_seconds")))
    names = sorted({k for _, _, t, _ in rows for k in t})
    head = "| LM | parameters | % of first | " + " | ".join(f"{n} ppl" for n in names) + " | train s |"
    lines = [head, "|" + "---|" * (4 + len(names))]
    for name, params, texts, secs in rows:
        cells = [f"{texts[n]['ppl']:.3f}" if n in texts else "-" for n in names]
        lines.append(f"| {name} | {params:,} | {100 * params / max(ref_params or 1, 1):.1f} | "
                     + " | ".join(cells) + f" | {secs if secs is not None else '-'} |")
    return "\n".join(lines) + "\n"


def rescore_table(rescore_dirs: Sequence[Pathlike]) -> str:
    """First pass, n-gram-only and LSTM rescoring WER per ``kdasr rescore`` output dir (dev-chosen weights)."""
    lines = ["| rescoring | LM | LM params | test WER % | dev WER % | weights (ngram, lstm, word) |",
             "|---|---|---:|---:|---:|---|"]
    first = True
    for d in map(Path, rescore_dirs):
        doc = _load(d / "rescore.yaml")
        for tag, r in doc["test"].items():
            if tag != "lstm" and not first:
                continue
            w = r.get("weights")
            weights = f"{w['ngram_weight']:g}, {w['lm_weight']:g}, {w['word_bonus']:g}" if w else "decode"
            lm = ("ensemble of " if len(doc["lm"]) > 1 else "") + " + ".join(Path(p).parent.name for p in doc["lm"]) \
                if tag == "lstm" else "-"
            params = f"{doc['lm_num_params']:,}" if tag == "lstm" else "-"
            dev = r.get("dev_wer", doc["dev_first_pass_wer"])
            lines.append(f"| {tag} | {lm} | {params} | {r['wer']:.2f} | {dev:.2f} | {weights} |")
        first = False
    return "\n".join(lines) + "\n"
