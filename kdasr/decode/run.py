"""Decode a cut set with a trained model and score it (the library side of ``kdasr decode``)."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import torch
import yaml
from lhotse import CutSet
from tqdm import tqdm

from kdasr.data.tokenizer import Tokenizer, UnknownTokenError
from kdasr.data.validate import cut_text
from kdasr.decode import Decoder, make_decoder, scan_lm_weights
from kdasr.decode.ensemble import load_ensemble
from kdasr.models import macs_per_second
from kdasr.models.checkpoint import load_model
from kdasr.models.inference import iter_model_outputs
from kdasr.score.wer import compute_wer, write_errs, write_recogs, write_wer_summary
from kdasr.utils.io import atomic_write_text


def check_log_probs(cut_ids: Sequence[str], log_probs: torch.Tensor, lens: torch.Tensor) -> None:
    """Refuse a batch whose log-probs hold NaN within a cut's frames, naming the cut (a search would silently drop it)."""
    valid = torch.arange(log_probs.shape[1], device=log_probs.device)[None, :] < lens.to(log_probs.device)[:, None]
    bad = torch.isnan(log_probs).any(-1) & valid
    if bool(bad.any()):
        b = int(bad.any(-1).nonzero()[0])
        frames = bad[b].nonzero().squeeze(1)
        raise ValueError(f"cut {cut_ids[b]}: the model's log-probs are NaN at {len(frames)} of its {int(lens[b])} "
                         f"frames (first: frame {int(frames[0])}); check its features and the checkpoint")


class Decoded(NamedTuple):
    """What :func:`decode_cuts` returns; ``nbest`` is empty unless asked for."""

    refs: dict[str, str]
    hyps: dict[str, str]
    nbest: dict[str, list[tuple[str, float]]]
    seconds: float


def decode_cuts(
    model: torch.nn.Module,
    cuts: CutSet,
    decoder: Decoder,
    device: torch.device,
    max_duration: float = 200.0,
    nbest: bool = False,
) -> Decoded:
    """Decode ``cuts``; the seconds cover the network and the search.

    ``nbest``: also keep each utterance's ``(text, score)`` list from
    ``decoder.hypotheses`` (beam and WFST searches built with ``nbest=K``).
    """
    out = Decoded({}, {}, {}, 0.0)
    bar = tqdm(desc="decode", total=len(cuts), unit="utt", leave=False, disable=None)
    t0 = time.perf_counter()
    for batch in iter_model_outputs(model, cuts, device, max_duration):
        check_log_probs(batch.cut_ids, batch.log_probs, batch.lens)
        if nbest:
            lists = decoder.hypotheses(batch.log_probs, batch.lens)  # type: ignore[attr-defined]
            texts = [hyps[0][0] for hyps in lists]
            out.nbest.update(zip(batch.cut_ids, lists))
        else:
            texts = decoder(batch.log_probs, batch.lens)
        for cut, hyp in zip(batch.cuts, texts):
            out.refs[cut.id], out.hyps[cut.id] = cut_text(cut), hyp
        bar.update(len(texts))
    if device.type == "cuda":
        torch.cuda.synchronize()
    bar.close()
    return out._replace(seconds=time.perf_counter() - t0)


def scan_weights_on_cuts(
    model: torch.nn.Module,
    cuts_path: Path,
    decoder_factory: Callable[[float], Decoder],
    weights: Sequence[float],
    device: torch.device,
    max_duration: float = 200.0,
) -> tuple[float, list[dict[str, float]]]:
    """Run the network over ``cuts_path`` once, then :func:`kdasr.decode.scan_lm_weights` on its log-probs.

    The log-probs are kept on the CPU (a dev set fits there; not always on
    the GPU next to the model); the decoders copy them where they search.
    """
    cuts = CutSet.from_file(cuts_path).to_eager()
    batches, refs = [], []
    for batch in iter_model_outputs(model, cuts, device, max_duration):
        batches.append((batch.log_probs.cpu(), batch.lens.cpu()))
        refs += [cut_text(c) for c in batch.cuts]
    if not refs:
        raise ValueError(f"{cuts_path} holds no cuts to scan LM weights on")
    return scan_lm_weights(decoder_factory, batches, refs, weights)


def write_scan_table(out_dir: Path, tag: str, cuts_path: Path, best: float, table: list[dict[str, float]]) -> Path:
    """Write and log ``lm-weight-scan-<tag>.yaml`` (for scripts) and ``.md`` (for people); return the latter."""
    doc = {"cuts": str(cuts_path), "best_lm_weight": best, "table": table}
    atomic_write_text(out_dir / f"lm-weight-scan-{tag}.yaml", yaml.safe_dump(doc, sort_keys=False))
    md = out_dir / f"lm-weight-scan-{tag}.md"
    text = scan_table_markdown(cuts_path, best, table)
    atomic_write_text(md, text)
    logging.info("LM weight scan (%s):\n%s", md, text)
    return md


def scan_table_markdown(cuts_path: Path, best: float, table: list[dict[str, float]]) -> str:
    """The rows of :func:`kdasr.decode.scan_lm_weights` as a markdown table, the best marked."""
    lines = [f"LM weight scan on {cuts_path} (best: {best:g})", "", "| lm_weight | WER % | errors | ref words |",
             "|---:|---:|---:|---:|"]
    for row in table:
        mark = " **best**" if row["lm_weight"] == best else ""
        lines.append(f"| {row['lm_weight']:g}{mark} | {row['wer']:.2f} | {row['errors']} | {row['ref_words']} |")
    return "\n".join(lines) + "\n"


def write_nbest(path: Path, nbest: dict[str, list[tuple[str, float]]]) -> None:
    """One line per hypothesis: ``cut_id<TAB>rank<TAB>score<TAB>text``, cuts sorted, best first."""
    lines = [f"{cid}\t{rank}\t{score:.4f}\t{text}" for cid in sorted(nbest)
             for rank, (text, score) in enumerate(nbest[cid], 1)]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def refs_outside_token_set(refs: dict[str, str], tokenizer: Tokenizer) -> list[str]:
    """Sorted ids of the references that ``tokenizer`` cannot spell."""
    bad = []
    for cid, text in refs.items():
        try:
            tokenizer.encode(text)
        except UnknownTokenError:
            bad.append(cid)
    return sorted(bad)


def set_name(cuts_path: Path) -> str:
    """``cuts_dev_wb.jsonl.gz`` -> ``dev_wb``: the name of a test set in output file names."""
    return Path(cuts_path).name.split(".")[0].removeprefix("cuts_")


def run_decode(
    checkpoint: Union[Path, Sequence[Path]],
    cuts_path: Path,
    lang_dir: Path,
    out_dir: Path,
    method: str = "greedy",
    device: str = "auto",
    max_duration: float = 200.0,
    decoder_opts: Optional[dict[str, Any]] = None,
    name: Optional[str] = None,
    num_jobs: int = 1,
    scan_weights: Optional[Sequence[float]] = None,
    scan_cuts: Optional[Path] = None,
) -> dict:
    """Decode ``cuts_path`` with ``checkpoint`` and write icefall-style results to ``out_dir``.

    Several checkpoints decode as one ensemble (:mod:`kdasr.decode.ensemble`): posteriors averaged
    after re-timing onto the first one's spikes; ``decode.yaml`` then names the members.

    Writes ``recogs-<name>-<method>.txt``, ``errs-...``, ``wer-summary-...``,
    ``nbest-...`` (when ``decoder_opts`` has ``nbest`` > 1) and
    ``decode.yaml`` (WER, per-condition WER, real-time factor, parameters,
    MACs) which ``kdasr report`` collects. ``num_jobs`` > 1 runs the WFST
    search in that many worker processes (same output as one). With
    ``scan_weights`` the network runs once over ``scan_cuts`` (a dev set),
    each weight is tried there, the table goes to ``lm-weight-scan-*``, and
    ``cuts_path`` is decoded with the weight of the lowest dev WER.
    """
    opts = dict(decoder_opts or {})
    if num_jobs != 1:
        if method != "wfst":
            raise ValueError(f"num_jobs={num_jobs}: only the wfst method runs in worker processes, not {method!r}")
        opts["num_jobs"] = num_jobs
    if (scan_weights is None) != (scan_cuts is None):
        raise ValueError("an LM weight scan needs both the weights and the dev cuts to scan them on "
                         "(--scan-lm-weights and --scan-cuts)")
    if scan_weights is not None:
        if method not in ("beam", "wfst"):
            raise ValueError(f"method {method!r} has no LM weight to scan; use beam (with an LM) or wfst")
        if "lm_weight" in opts:
            raise ValueError("give the LM weight either as a decoder option or as weights to scan, not both")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    paths = [Path(checkpoint)] if isinstance(checkpoint, (str, Path)) else [Path(p) for p in checkpoint]
    tokenizer = Tokenizer.from_dir(lang_dir)
    if len(paths) > 1:
        model, ckpt = load_ensemble(paths, dev, tokenizer.blank_id)
    else:
        model, ckpt = load_model(paths[0], dev)
    checkpoint = paths[0]
    if ckpt["lang_hash"] != tokenizer.hash:
        raise ValueError(f"{checkpoint} was trained with another token set than {lang_dir}")
    name = name or set_name(cuts_path)
    tag = f"{name}-{method}"
    out_dir.mkdir(parents=True, exist_ok=True)
    scan_info = None
    if scan_weights is not None:
        assert scan_cuts is not None

        def with_weight(w: float) -> Decoder:
            decoder = make_decoder(method, tokenizer, device=dev, **{**opts, "lm_weight": w, "nbest": 1})
            if getattr(decoder, "lm_path", True) is None:  # a beam search without an LM ignores the weight
                raise ValueError("beam search has no LM whose weight to scan: give graph_dir=<graph> or lm=<arpa>")
            return decoder

        best, table = scan_weights_on_cuts(model, scan_cuts, with_weight, scan_weights, dev,
                                           max_duration)
        md = write_scan_table(out_dir, f"{set_name(scan_cuts)}-{method}", scan_cuts, best, table)
        opts["lm_weight"] = best
        scan_info = {"cuts": str(scan_cuts), "best_lm_weight": best, "table": md.name}
    cuts = CutSet.from_file(cuts_path).to_eager()
    nbest = int(opts.get("nbest", 1)) > 1
    decoder = make_decoder(method, tokenizer, device=dev, **opts)
    try:
        result = decode_cuts(model, cuts, decoder, dev, max_duration, nbest=nbest)
    finally:
        close = getattr(decoder, "close", None)
        if close is not None:
            close()
    refs, hyps = result.refs, result.hyps
    outside = refs_outside_token_set(refs, tokenizer)
    if outside:
        logging.warning("%d reference(s) of %s hold characters outside the token set %s; scored as written "
                        "(those words can only count as errors): %s", len(outside), cuts_path, lang_dir,
                        " ".join(outside[:20]) + (f" ... and {len(outside) - 20} more" if len(outside) > 20 else ""))
    split = {k: v.split() for k, v in refs.items()}
    stats = compute_wer(split, {k: v.split() for k, v in hyps.items()})
    conditions = {c.id: c.supervisions[0].custom.get("condition") for c in cuts
                  if c.supervisions and c.supervisions[0].custom and "condition" in c.supervisions[0].custom}
    per_condition = {}
    for cond in sorted(set(conditions.values())):
        ids = [i for i, c in conditions.items() if c == cond]
        per_condition[cond] = round(compute_wer({i: split[i] for i in ids}, {i: hyps[i].split() for i in ids}).wer, 2)
    write_recogs(out_dir / f"recogs-{tag}.txt", split, {k: v.split() for k, v in hyps.items()})
    write_errs(out_dir / f"errs-{tag}.txt", stats)
    write_wer_summary(out_dir / f"wer-summary-{tag}.txt", {method: stats.wer})
    if nbest:
        write_nbest(out_dir / f"nbest-{tag}.txt", result.nbest)
    audio_seconds = sum(c.duration for c in cuts)
    summary = {
        "checkpoint": str(checkpoint),
        **({"members": ckpt["members"]} if "members" in ckpt else {}),
        "model": ckpt["model_cfg"]["name"],
        "cuts": str(cuts_path),
        "method": method,
        "device": str(dev),
        "decoder_opts": opts,
        **({"wfst_backend": decoder.backend} if hasattr(decoder, "backend") else {}),
        "wer": round(stats.wer, 2),
        "errors": stats.errors,
        "ref_words": stats.ref_words,
        "cer": round(stats.cer, 2),
        "per_condition_wer": per_condition,
        "num_params": model.num_params(),
        "macs_per_second": float(macs_per_second(model, ckpt["num_features"])),
        "rtf": result.seconds / max(audio_seconds, 1e-9),
        "audio_seconds": audio_seconds,
    }
    if outside:
        summary["refs_outside_token_set"] = outside
    if scan_info is not None:
        summary["lm_weight"] = scan_info["best_lm_weight"]
        summary["lm_weight_scan"] = scan_info
    atomic_write_text(out_dir / "decode.yaml", yaml.safe_dump(summary, sort_keys=False))
    logging.info("%s %s: WER %.2f%% (%d/%d), CER %.2f%%, RTF %.4f", name, method, stats.wer, stats.errors,
                 stats.ref_words, stats.cer, summary["rtf"])
    return summary
