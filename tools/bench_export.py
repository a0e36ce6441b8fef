#!/usr/bin/env python3
"""Size, speed and WER of a student in each runtime: torch, onnxruntime and sherpa-onnx, fp32 and int8.

Not a test: it prints a table. It exports CHECKPOINT with ``--format
sherpa-onnx`` into a temporary directory, then transcribes every cut of
CUTS from its audio file (features computed from the audio in every row,
one utterance at a time, one thread) with:

- torch: the checkpoint through ``kdasr.transcribe`` (the reference row);
- onnxruntime fp32 / int8: the exported graphs through ``kdasr.transcribe``;
- sherpa-onnx fp32 / int8: ``sherpa_onnx.OfflineRecognizer.from_zipformer_ctc``,
  which computes its own features (kaldi-native-fbank);

greedy search everywhere, and with ``--graph-dir`` also the WFST search
(kaldi-decoder at sherpa-onnx's beam in kdasr; sherpa-onnx's ``ctc_graph``).
RTF = CPU seconds of this process / audio seconds (CPU time, not wall
time: on a shared machine wall time measures the neighbours; every runtime
runs one thread); "same" counts hypotheses identical to the torch row of
the same search. Run it from the recipe directory (cut
manifests hold audio paths relative to it):

    cd egs/demo && python ../../tools/bench_export.py --checkpoint exp/cnn_wb/best.pt \\
        --cuts data/fbank/cuts_test_wb.jsonl.gz --graph-dir data/lang_bpe/graph_<hash>
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import torch
from lhotse import CutSet

from kdasr.export_sherpa import MODEL, MODEL_INT8, SHERPA_FST_BEAM, SHERPA_FST_MAX_ACTIVE, export_sherpa
from kdasr.score.wer import compute_wer
from kdasr.transcribe import load_acoustic_model, read_mono, transcribe


def kdasr_runner(model_path: Path, int8: bool, method: str, graph_dir: Optional[Path],
                 sample_rate: Optional[int]) -> Callable[[list[Path]], list[str]]:
    loaded = load_acoustic_model(model_path, sample_rate=sample_rate, int8=int8, num_threads=1)
    opts = {"graph_dir": graph_dir, "beam": SHERPA_FST_BEAM, "max_active": SHERPA_FST_MAX_ACTIVE} \
        if method == "wfst" else {}

    def run(paths: list[Path]) -> list[str]:
        # max_duration below one utterance: batches of one, as sherpa-onnx decodes here
        out = transcribe(loaded, paths, method, opts, max_duration=1e-3, progress=False, with_times=False)
        return [t.text for t in out]
    return run


def sherpa_runner(export_dir: Path, model: str, graph: bool) -> Callable[[list[Path]], list[str]]:
    import sherpa_onnx
    import yaml

    meta = yaml.safe_load((export_dir / "model.meta.yaml").read_text())
    recognizer = sherpa_onnx.OfflineRecognizer.from_zipformer_ctc(
        model=str(export_dir / model), tokens=str(export_dir / "tokens.txt"), num_threads=1,
        sample_rate=meta["sample_rate"], feature_dim=meta["num_features"],
        ctc_graph=str(export_dir / "TLG.fst") if graph else "", ctc_max_active=SHERPA_FST_MAX_ACTIVE)

    def run(paths: list[Path]) -> list[str]:
        out = []
        for p in paths:
            x = read_mono(p, meta["sample_rate"])
            stream = recognizer.create_stream()
            stream.accept_waveform(meta["sample_rate"], x)
            recognizer.decode_stream(stream)
            out.append(" ".join(stream.result.text.split()))
        return out
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--cuts", type=Path, required=True, help="Cuts with recordings and transcripts.")
    ap.add_argument("--graph-dir", type=Path, default=None, help="Also time the WFST search with this graph.")
    ap.add_argument("--sample-rate", type=int, default=None, help="For checkpoints that do not record it.")
    ap.add_argument("--lang-dir", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"

    cuts = list(CutSet.from_file(args.cuts))
    paths = [Path(c.recording.sources[0].source) for c in cuts]
    refs = {c.id: c.supervisions[0].text.split() for c in cuts}
    audio_seconds = sum(c.duration for c in cuts)
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(tmp) / "sherpa"
        res = export_sherpa(args.checkpoint, export, sample_rate=args.sample_rate, lang_dir=args.lang_dir,
                            graph_dir=args.graph_dir)
        sizes = {"torch": sum(t.numel() * t.element_size() for t in
                              torch.load(args.checkpoint, map_location="cpu", weights_only=False)["model"].values()),
                 "fp32": res.files[MODEL], "int8": res.files[MODEL_INT8]}
        methods = ["greedy"] + (["wfst"] if args.graph_dir else [])
        rows = []
        for method in methods:
            graph = args.graph_dir if method == "wfst" else None
            runners = [
                ("torch", "fp32", "torch", lambda: kdasr_runner(args.checkpoint, False, method, graph, args.sample_rate)),
                ("onnxruntime", "fp32", "fp32", lambda: kdasr_runner(export, False, method, export if graph else None, None)),
                ("onnxruntime", "int8", "int8", lambda: kdasr_runner(export, True, method, export if graph else None, None)),
                ("sherpa-onnx", "fp32", "fp32", lambda: sherpa_runner(export, MODEL, method == "wfst")),
                ("sherpa-onnx", "int8", "int8", lambda: sherpa_runner(export, MODEL_INT8, method == "wfst")),
            ]
            reference: Optional[list[str]] = None
            ref_seconds = 0.0
            for runtime, weights, size_key, make in runners:
                run = make()
                run(paths[:2])  # warm up (session start, first allocations)
                t0 = time.process_time()
                hyps = run(paths)
                seconds = time.process_time() - t0
                if reference is None:
                    reference, ref_seconds = hyps, seconds
                wer = compute_wer(refs, {c.id: h.split() for c, h in zip(cuts, hyps)})
                rows.append((method, runtime, weights, sizes[size_key] / 1e6, seconds / audio_seconds,
                             seconds / ref_seconds, wer.wer, sum(a == b for a, b in zip(hyps, reference))))
    print(f"\n{len(cuts)} utterances, {audio_seconds / 60:.1f} min of audio ({args.cuts}); 1 thread, CPU, "
          f"one utterance at a time, features from the audio in every row; RTF from CPU time\n")
    print("| search | runtime | weights | size MB | RTF | time vs torch | WER % | same as torch |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for method, runtime, weights, mb, rtf, ratio, wer, same in rows:
        print(f"| {method} | {runtime} | {weights} | {mb:.2f} | {rtf:.4f} | {ratio:.2f}x | {wer:.2f} | "
              f"{same}/{len(cuts)} |")


if __name__ == "__main__":
    main()
