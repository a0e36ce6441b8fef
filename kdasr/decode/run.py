"""Decode a cut set with a trained model and score it (the library side of ``kdasr decode``)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
import yaml
from lhotse import CutSet
from lhotse.dataset import SimpleCutSampler
from tqdm import tqdm

from kdasr.data.dataset import AsrDataset
from kdasr.data.tokenizer import Tokenizer
from kdasr.models import macs_per_second
from kdasr.score.wer import compute_wer, write_errs, write_recogs, write_wer_summary
from kdasr.train.checkpoint import load_model
from kdasr.utils.io import atomic_write_text

Decoder = Callable[[torch.Tensor, torch.Tensor], list[str]]


def iter_log_probs(
    model: torch.nn.Module, cuts: CutSet, tokenizer: Tokenizer, device: torch.device, max_duration: float
) -> Iterator[tuple[dict, torch.Tensor, torch.Tensor]]:
    """Yield (batch, log_probs (B,T',V), out_lens) over ``cuts`` in a fixed order."""
    loader = torch.utils.data.DataLoader(
        AsrDataset(tokenizer), sampler=SimpleCutSampler(cuts, max_duration=max_duration), batch_size=None
    )
    with torch.inference_mode():
        for batch in loader:
            logits, out_lens = model(batch["features"].to(device), batch["feature_lens"].to(device))
            yield batch, logits.float().log_softmax(dim=-1), out_lens


def decode_cuts(
    model: torch.nn.Module,
    cuts: CutSet,
    tokenizer: Tokenizer,
    decoder: Decoder,
    device: torch.device,
    max_duration: float = 200.0,
) -> tuple[dict[str, str], dict[str, str], float]:
    """Return (refs, hyps, seconds spent in the network and the search)."""
    refs: dict[str, str] = {}
    hyps: dict[str, str] = {}
    total = 0.0
    bar = tqdm(desc="decode", total=len(cuts), unit="utt", leave=False)
    t0 = time.perf_counter()
    for batch, log_probs, out_lens in iter_log_probs(model, cuts, tokenizer, device, max_duration):
        texts = decoder(log_probs, out_lens)
        for cid, ref, hyp in zip(batch["cut_ids"], batch["texts"], texts):
            refs[cid], hyps[cid] = ref, hyp
        bar.update(len(texts))
    if device.type == "cuda":
        torch.cuda.synchronize()
    total = time.perf_counter() - t0
    bar.close()
    return refs, hyps, total


def run_decode(
    checkpoint: Path,
    cuts_path: Path,
    lang_dir: Path,
    out_dir: Path,
    method: str = "greedy",
    device: str = "auto",
    max_duration: float = 200.0,
    decoder_opts: Optional[dict[str, Any]] = None,
    name: Optional[str] = None,
) -> dict:
    """Decode ``cuts_path`` with ``checkpoint`` and write icefall-style results to ``out_dir``.

    Writes ``recogs-<name>.txt``, ``errs-<name>.txt``, ``wer-summary-<name>.txt``
    and ``decode.yaml`` (WER, per-condition WER, real-time factor, parameters,
    MACs) which ``kdasr report`` collects.
    """
    from kdasr.decode import make_decoder

    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    model, ckpt = load_model(checkpoint, dev)
    tokenizer = Tokenizer.from_dir(lang_dir)
    if ckpt["lang_hash"] != tokenizer.hash:
        raise ValueError(f"{checkpoint} was trained with another token set than {lang_dir}")
    cuts = CutSet.from_file(cuts_path).to_eager()
    decoder = make_decoder(method, tokenizer, device=dev, **(decoder_opts or {}))
    refs, hyps, seconds = decode_cuts(model, cuts, tokenizer, decoder, dev, max_duration)
    name = name or Path(cuts_path).name.split(".")[0].removeprefix("cuts_")
    split = {k: v.split() for k, v in refs.items()}
    stats = compute_wer(split, {k: v.split() for k, v in hyps.items()})
    conditions = {c.id: c.supervisions[0].custom.get("condition") for c in cuts
                  if c.supervisions and c.supervisions[0].custom and "condition" in c.supervisions[0].custom}
    per_condition = {}
    for cond in sorted(set(conditions.values())):
        ids = [i for i, c in conditions.items() if c == cond]
        per_condition[cond] = round(compute_wer({i: split[i] for i in ids}, {i: hyps[i].split() for i in ids}).wer, 2)
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{name}-{method}"
    write_recogs(out_dir / f"recogs-{tag}.txt", split, {k: v.split() for k, v in hyps.items()})
    write_errs(out_dir / f"errs-{tag}.txt", stats)
    write_wer_summary(out_dir / f"wer-summary-{tag}.txt", {method: stats.wer})
    audio_seconds = sum(c.duration for c in cuts)
    summary = {
        "checkpoint": str(checkpoint),
        "model": ckpt["model_cfg"]["name"],
        "cuts": str(cuts_path),
        "method": method,
        "device": str(dev),
        "decoder_opts": decoder_opts or {},
        "wer": round(stats.wer, 2),
        "errors": stats.errors,
        "ref_words": stats.ref_words,
        "per_condition_wer": per_condition,
        "num_params": model.num_params(),
        "macs_per_second": float(macs_per_second(model, ckpt["num_features"])),
        "rtf": seconds / max(audio_seconds, 1e-9),
        "audio_seconds": audio_seconds,
    }
    atomic_write_text(out_dir / "decode.yaml", yaml.safe_dump(summary, sort_keys=False))
    logging.info("%s %s: WER %.2f%% (%d/%d), RTF %.4f", name, method, stats.wer, stats.errors, stats.ref_words, summary["rtf"])
    return summary
