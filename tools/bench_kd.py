#!/usr/bin/env python3
"""What knowledge distillation costs, from a soft-label archive or with the teacher online, and what top-k storage loses.

Not a test: it prints figures, all measured in the same run (ratios compare
runs on the same machine under the same load):

(a) training-step throughput of the same CNN student on the same batches
    with plain CTC (``CtcObjective``), with frame-KL KD from a dense and a
    top-k archive (``KDTargets`` + ``KDObjective``; the step includes reading
    and expanding the labels, which is what the trainer pays), and with the
    teacher online (``kd.teachers[].checkpoint``: the step includes the
    teacher's forward pass on the batch);
(b) archive bytes per output frame, dense vs top-k (k = --ks) at vocabularies
    30, 100 and 500, each float16 and compact (uint8), on CTC-like synthetic
    distributions (blank-dominated, peaky), and of the teacher's own labels
    with their KL to its dense float16 labels;
(c) soft-label dump speed (seconds of audio per second) of a teacher, dense
    and top-8;
(d) WER of CNN students trained with CTC only, with KD from dense and
    top-k labels of --teacher, float16 or compact, and with --teacher online
    on the student's features or on their clean copy (--wer-labels; needs
    --data-dir and --teacher; --skip-train leaves it out), each with its
    relative difference to the dense-label students.

Without --data-dir, (a)-(c) run on synthetic feature cuts with an untrained
teacher built from --teacher-config (speed does not depend on the weights).
With --data-dir (a recipe's data dir: fbank/cuts_{train,dev,test}_wb.jsonl.gz,
fbank/cmvn_wb.json, --lang) they run on its training cuts, and on
--teacher when given.

    python tools/bench_kd.py --skip-train
    python tools/bench_kd.py --data-dir egs/demo/data --teacher egs/demo/exp/vgg_wb/best.pt --epochs 12
    python tools/bench_kd.py --data-dir egs/demo/data --lang lang_bpe --teacher egs/demo/exp/cnn_wb/best.pt \
        --wer-labels dense,top8-u8,online --seeds 1,2
"""
from __future__ import annotations

import argparse
import copy
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import yaml
from lhotse import CutSet, LilcomChunkyWriter, MonoCut, SupervisionSegment
from lhotse.dataset import SimpleCutSampler
from lhotse.features.base import Features
from lhotse.utils import compute_num_frames

from kdasr.config import load_config
from kdasr.ctc import CtcObjective
from kdasr.data.dataset import AsrDataset
from kdasr.data.features import load_cmvn
from kdasr.data.tokenizer import Tokenizer, build_char_lang, texts_from_cuts
from kdasr.distill.archive import (
    COMPACT_LOGP_RANGE,
    ArchiveMeta,
    SoftLabelWriter,
    archive_info,
    default_k,
    dump_from_checkpoint,
    load_archive,
    load_probs,
    merge_jobs,
    payload_bytes_per_frame,
)
from kdasr.distill.strategies import KDObjective, KDTargets
from kdasr.models import build_model, output_lengths
from kdasr.models.checkpoint import load_checkpoint
from kdasr.train.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parent.parent
WORDS = ["ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE", "ZERO", "OPEN", "CLOSE",
         "THE", "DOOR", "WINDOW", "LIGHTS", "QUICK", "JUMP", "VEX", "BACK"]


def _ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- data


def synthetic_cuts(out_dir: Path, num_cuts: int, mean_duration: float, num_features: int, seed: int) -> CutSet:
    """Random-feature cuts (10 ms frames) with word transcripts; only shapes matter for speed and size."""
    rng = np.random.default_rng(seed)
    cuts = []
    with LilcomChunkyWriter(out_dir / "synth_feats") as w:
        for i in range(num_cuts):
            cid = f"synth-{i:05d}"
            dur = round(float(np.clip(rng.normal(mean_duration, mean_duration / 4), 0.5, 3 * mean_duration)), 2)
            T = compute_num_frames(dur, 0.01, 16000)
            n_words = max(1, int(dur * 2))
            text = " ".join(rng.choice(WORDS, size=n_words))
            key = w.write(cid, rng.standard_normal((T, num_features)).astype(np.float32))
            feats = Features(type="fbank", num_frames=T, num_features=num_features, frame_shift=0.01,
                             sampling_rate=16000, start=0.0, duration=dur, storage_type=w.name,
                             storage_path=w.storage_path, storage_key=key)
            sup = SupervisionSegment(id=cid, recording_id=cid, start=0.0, duration=dur, text=text)
            cuts.append(MonoCut(id=cid, start=0.0, duration=dur, channel=0, features=feats, supervisions=[sup]))
    return CutSet.from_cuts(cuts)


class Setup:
    """Cuts, token set, CMVN and teacher checkpoint shared by (a)-(d)."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.work = work
        self.data_dir: Optional[Path] = args.data_dir
        if args.data_dir is not None:
            fb = args.data_dir / "fbank"
            self.cuts_path = fb / "cuts_train_wb.jsonl.gz"
            self.lang_dir = args.data_dir / args.lang
            self.cmvn = load_cmvn(fb / "cmvn_wb.json") if (fb / "cmvn_wb.json").is_file() else None
        else:
            cuts = synthetic_cuts(work, args.num_cuts, args.duration, args.num_features, seed=0)
            self.cuts_path = work / "cuts_train_wb.jsonl.gz"
            cuts.to_file(self.cuts_path)
            self.lang_dir = work / "lang_char"
            build_char_lang(texts_from_cuts(cuts), self.lang_dir)
            self.cmvn = None
        self.cuts = CutSet.from_file(self.cuts_path).to_eager()
        self.tok = Tokenizer.from_dir(self.lang_dir)
        self.num_features = next(iter(self.cuts)).num_features
        if args.teacher is not None:
            self.teacher = args.teacher
            ckpt = load_checkpoint(self.teacher)
            if ckpt["lang_hash"] != self.tok.hash:
                raise SystemExit(f"--teacher {args.teacher} was trained with another token set than {self.lang_dir}")
            self.teacher_name = f"{ckpt['model_cfg']['name']} ({args.teacher})"
        else:
            cfg = load_config(args.teacher_config)["model"]
            torch.manual_seed(0)
            model = build_model(cfg, self.num_features, self.tok.vocab_size, self.cmvn)
            self.teacher = work / "untrained_teacher" / "best.pt"
            save_checkpoint(self.teacher, {"model": model.state_dict(), "model_cfg": cfg,
                                           "num_features": self.num_features, "vocab_size": self.tok.vocab_size,
                                           "lang_hash": self.tok.hash, "epoch": 0, "step": 0, "config": {}})
            self.teacher_name = f"untrained {cfg['name']} ({args.teacher_config})"
        self.hours = sum(c.duration for c in self.cuts) / 3600

    def archive(self, k: Optional[int], temperature: float, device: str, fresh: bool = False,
                quantization: Optional[str] = None, logp_range: Optional[float] = None) -> tuple[Path, dict]:
        """The teacher's archive of the training cuts (dense when ``k`` is None); ``fresh`` dumps it again."""
        out = self.work / "archives" / f"T{temperature:g}_{_label_name(k, quantization, logp_range)}"
        if fresh and out.exists():
            shutil.rmtree(out)
        stats = dump_from_checkpoint(self.teacher, self.cuts_path, out, k=k, temperature=temperature,
                                     quantization=quantization, logp_range=logp_range, device=device, progress=False)
        return out, stats


def _label_name(k: Optional[int], quantization: Optional[str], logp_range: Optional[float] = None) -> str:
    """``dense``, ``top8``, ``top8-u8``, ``top8-u8r8`` (8-bit steps of [-8, 0])...: the names ``--wer-labels`` takes."""
    return (("dense" if k is None else f"top{k}") + ("-u8" if quantization else "")
            + (f"r{logp_range:g}" if logp_range is not None else ""))


def _parse_label_name(name: str) -> tuple[Optional[int], Optional[str], Optional[float]]:
    base, _, q = name.partition("-")
    m = re.fullmatch(r"(u8)?(?:r(\d+(?:\.\d+)?))?", q)
    if m is None or (m[2] and not m[1]) or not (base == "dense" or (base.startswith("top") and base[3:].isdigit())):
        raise SystemExit(f"--wer-labels: {name!r} is not ctc, online, dense, top<K>, dense-u8, top<K>-u8 "
                         "or top<K>-u8r<R> (8-bit steps of [-R, 0])")
    return (None if base == "dense" else int(base[3:])), ("uint8" if m[1] else None), (float(m[2]) if m[2] else None)


# --------------------------------------------------------------------------- (c) dump speed


def bench_dump(setup: Setup, ks: list[Optional[int]], temperature: float, device: str, rounds: int) -> dict:
    """Dump each kind of labels ``rounds`` times (interleaved, after an untimed warm-up) and print the median speed."""
    warm = setup.work / "warmup_cuts.jsonl.gz"
    setup.cuts.subset(first=min(4, len(setup.cuts))).to_file(warm)
    dump_from_checkpoint(setup.teacher, warm, setup.work / "warmup_archive", k=ks[-1], temperature=temperature,
                         device=device, progress=False)
    xrt: dict[Optional[int], list[float]] = {k: [] for k in ks}
    wall: dict[Optional[int], list[float]] = {k: [] for k in ks}
    archives = {}
    for _ in range(rounds):
        for k in ks:
            out, st = setup.archive(k, temperature, device, fresh=True)
            archives[k] = out
            xrt[k].append(st["xrt"])
            wall[k].append(st["wall_seconds"])
    print(f"\n(c) soft-label dump speed: teacher {setup.teacher_name}, {len(setup.cuts)} cuts, "
          f"{setup.hours * 3600:.0f} s of audio, device {device}, median of {rounds} dumps")
    print(f"    {'labels':<8} {'wall s':>8} {'x real time':>12}")
    for k in ks:
        name = "dense" if k is None else f"top-{k}"
        print(f"    {name:<8} {statistics.median(wall[k]):8.2f} {statistics.median(xrt[k]):12.1f}")
    return archives


# --------------------------------------------------------------------------- (a) step throughput


def _batches(setup: Setup, max_duration: float, num_steps: int, device: torch.device) -> list[dict]:
    """Collated batches (features on ``device``), loaded once so that timing sees only the step."""
    ds = AsrDataset(setup.tok)
    sampler = SimpleCutSampler(setup.cuts, max_duration=max_duration, shuffle=True, seed=0)
    out = []
    for cuts in sampler:
        b = ds[cuts]
        b["features"], b["feature_lens"] = b["features"].to(device), b["feature_lens"].to(device)
        out.append(b)
        if len(out) >= num_steps:
            break
    return out


def bench_steps(setup: Setup, archives: dict, student_cfg: dict, max_duration: float, num_steps: int,
                rounds: int, device: torch.device, temperature: float) -> None:
    batches = _batches(setup, max_duration, num_steps, device)
    audio = sum(float(c.duration) for b in batches for c in b["cuts"])
    torch.manual_seed(0)
    base = build_model(student_cfg, setup.num_features, setup.tok.vocab_size, setup.cmvn)
    objectives: dict[str, Callable] = {"ctc": CtcObjective()}
    kd_cfg = {"strategy": "frame-kl", "lambda": 0.5}
    targets = {}
    for k, path in archives.items():
        name = "kd dense" if k is None else f"kd top-{k}"
        t = KDTargets({"kd": {**kd_cfg, "teachers": [{"name": "t", "archive": str(path)}]}}, setup.cuts,
                      setup.tok.hash, setup.tok.vocab_size)
        targets[name] = t
        objectives[name] = KDObjective(t)
    # the batches here are not augmented, so the teacher reads the student's own features
    online = KDTargets({"kd": {**kd_cfg, "temperature": temperature, "teacher_input": "augmented",
                               "teachers": [{"name": "t", "checkpoint": str(setup.teacher)}]}},
                       setup.cuts, setup.tok.hash, setup.tok.vocab_size)
    targets["kd online"] = online
    objectives["kd online"] = KDObjective(online)
    models = {n: copy.deepcopy(base).to(device).train() for n in objectives}
    opts = {n: torch.optim.AdamW(m.parameters(), lr=1e-4) for n, m in models.items()}
    times: dict[str, list[float]] = {n: [] for n in objectives}
    cpu: dict[str, list[float]] = {n: [] for n in objectives}

    def step(name: str, i: int, b: dict) -> None:
        loss, _ = objectives[name](models[name], b, i)
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()

    names = list(objectives)
    for i, b in enumerate(batches):  # warm-up on every batch shape: allocator, kernel caches, HDF5 opens
        for name in names:
            step(name, i, b)
    for r in range(rounds):
        spent = dict.fromkeys(objectives, 0.0)
        spent_cpu = dict.fromkeys(objectives, 0.0)
        for i, b in enumerate(batches):
            # interleaved batch by batch so that a change of load hits every objective, in rotating order
            # so that none always runs first on a batch
            for j in range(len(names)):
                name = names[(i + r + j) % len(names)]
                _sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                step(name, (r + 1) * len(batches) + i, b)
                _sync(device)
                spent[name] += time.perf_counter() - t0
                spent_cpu[name] += time.process_time() - c0
        for name in objectives:
            times[name].append(spent[name])
            cpu[name].append(spent_cpu[name])
    lookup: dict[str, float] = {}
    for name, t in targets.items():  # label lookup alone (archive read + expansion), per step
        t0 = time.perf_counter()
        for i, b in enumerate(batches):
            by_id = {c.id: c for c in b["cuts"]}
            cuts = [by_id[x] for x in b["cut_ids"]]
            t.targets_for_batch(cuts, output_lengths(b["feature_lens"]).cpu(), i, device=device,
                                inputs={None: (b["features"], b["feature_lens"])})
        _sync(device)
        lookup[name] = (time.perf_counter() - t0) / len(batches)

    print(f"\n(a) training-step throughput: student {student_cfg.get('name')} "
          f"({base.num_params() / 1e6:.2f} M params), vocab {setup.tok.vocab_size}, {len(batches)} batches of "
          f"<= {max_duration:g} s ({audio:.0f} s of audio), median of {rounds} rounds, device {device}")
    print(f"    {'objective':<12} {'ms/step':>9} {'audio s/s':>10} {'vs ctc':>7} {'cpu ms/step':>12} {'vs ctc':>7} "
          f"{'label ms/step':>14}")
    ctc, ctc_cpu = statistics.median(times["ctc"]), statistics.median(cpu["ctc"])
    for name in objectives:
        med, med_cpu = statistics.median(times[name]), statistics.median(cpu[name])
        lk = f"{lookup[name] * 1000:14.1f}" if name in lookup else f"{'-':>14}"
        print(f"    {name:<12} {1000 * med / len(batches):9.1f} {audio / med:10.1f} {ctc / med:7.2f} "
              f"{1000 * med_cpu / len(batches):12.1f} {ctc_cpu / med_cpu:7.2f} {lk}")
    print("    (vs ctc: KD throughput / CTC throughput, from wall time and from this process's CPU time, which\n"
          "     other processes' load disturbs less; label ms/step: reading and expanding the labels alone,\n"
          f"     online: the teacher's forward pass ({setup.teacher_name}))")


# --------------------------------------------------------------------------- (b) bytes per frame


def _ctc_like_logp(T: int, V: int, rng: np.random.Generator) -> np.ndarray:
    """Blank-dominated, peaky rows like a trained CTC model's (2/3 of frames blank)."""
    logits = rng.standard_normal((T, V)).astype(np.float32) * 1.5
    best = np.where(rng.random(T) < 2 / 3, 0, rng.integers(1, V, size=T))
    logits[np.arange(T), best] += 9.0
    return torch.log_softmax(torch.from_numpy(logits), dim=-1).numpy()


def bench_bytes(cuts: CutSet, work: Path, vocabs: list[int], ks: list[int]) -> None:
    print(f"\n(b) archive bytes per output frame ({len(cuts)} cuts, "
          f"{sum(output_lengths(c.num_frames) for c in cuts)} frames of synthetic CTC-like labels)")
    print(f"    {'vocab':>5} {'labels':<12} {'payload B':>9} {'arrays B':>9} {'on disk B':>9} {'vs dense':>8}  default")
    for V in vocabs:
        rng = np.random.default_rng(V)
        logps = {c.id: _ctc_like_logp(output_lengths(c.num_frames), V, rng) for c in cuts}
        dense_bpf = None
        for k in [None] + [k for k in ks if k < V]:
            for q in (None, "uint8"):
                name = _label_name(k, q)
                out = work / "bytes" / f"V{V}_{name}"
                shutil.rmtree(out, ignore_errors=True)
                meta = ArchiveMeta(teacher="synthetic", checkpoint="-", lang_hash="-", vocab_size=V, k=k,
                                   quantization=q, logp_range=COMPACT_LOGP_RANGE if q else None)
                with SoftLabelWriter(out, meta) as w:
                    for c in cuts:
                        w.add(c, logps[c.id])
                merge_jobs(out)
                info = archive_info(out)
                arrays = sum(p.stat().st_size for p in (out / "arrays").iterdir()) / info["total_frames"]
                if dense_bpf is None:
                    dense_bpf = info["bytes_per_frame"]
                mark = "<-" if k == default_k(V) and q is None else ""
                print(f"    {V:5d} {name:<12} {payload_bytes_per_frame(V, k, q):9d} {arrays:9.1f} "
                      f"{info['bytes_per_frame']:9.1f} {info['bytes_per_frame'] / dense_bpf:8.3f}  {mark}")
    print("    (payload: the arrays' bytes; arrays: the arrays files (HDF5, or raw bytes for -u8); on disk: the\n"
          "     whole directory, manifests included; -u8: the compact form, uint8 log-probs in "
          f"[-{COMPACT_LOGP_RANGE:g}, 0] and uint8 ids)")


def bench_teacher_labels(setup: Setup, ks: list[int], temperature: float, device: str) -> None:
    """Bytes per frame of the teacher's own labels in each form, and how far each is from its dense float16 labels."""
    V = setup.tok.vocab_size
    forms = [(None, None), (None, "uint8")] + [(k, q) for k in ks if k < V for q in (None, "uint8")]
    probs: dict[str, dict[str, np.ndarray]] = {}
    print(f"\n(b') the teacher's labels of the training cuts ({setup.teacher_name}, T={temperature:g}): "
          f"each form against the dense float16 labels")
    print(f"    {'labels':<12} {'on disk B/frame':>15} {'KL nats/frame':>14} {'argmax agreement':>17}")
    for k, q in forms:
        name = _label_name(k, q)
        out, _ = setup.archive(k, temperature, device, quantization=q)
        meta, cuts = load_archive(out)
        probs[name] = {c.id: load_probs(c, meta.vocab_size) for c in cuts}
        ref = probs["dense"]
        kl, agree, frames = 0.0, 0, 0
        for cid, p in ref.items():
            r = probs[name][cid]
            kl += float((p * (np.log(np.maximum(p, 1e-30)) - np.log(np.maximum(r, 1e-30)))).sum())
            agree += int((p.argmax(1) == r.argmax(1)).sum())
            frames += p.shape[0]
        print(f"    {name:<12} {archive_info(out)['bytes_per_frame']:15.1f} {kl / frames:14.2e} {agree / frames:17.5f}")


# --------------------------------------------------------------------------- (d) WER


def bench_wer(setup: Setup, args: argparse.Namespace, device: str) -> None:
    from kdasr.decode.run import run_decode
    from kdasr.train.build import train_from_config

    fb = args.data_dir / "fbank"
    base = load_config([args.train_config, args.student_config], args.overrides)
    base.setdefault("data", {}).update(train_cuts=str(fb / "cuts_train_wb.jsonl.gz"), dev_cuts=str(fb / "cuts_dev_wb.jsonl.gz"),
                        lang_dir=str(setup.lang_dir))
    if (fb / "cmvn_wb.json").is_file():
        base["data"]["cmvn"] = str(fb / "cmvn_wb.json")
    base.setdefault("train", {}).update(epochs=args.epochs, device=device)
    V = setup.tok.vocab_size
    names = args.wer_labels or ["ctc", "dense"] + [f"top{k}" for k in args.ks if k < V]
    kinds: list[tuple[str, Optional[dict]]] = []
    for label in names:
        if label == "ctc":
            kinds.append(("ctc", None))
            continue
        if label in ("online", "online-clean"):  # the teacher on the student's features, or on their clean copy
            kinds.append((f"kd {label}", {
                "strategy": "frame-kl", "lambda": args.kd_lambda, "temperature": args.temperature,
                "teacher_input": "clean" if label == "online-clean" else "augmented",
                "teachers": [{"name": "teacher", "checkpoint": str(setup.teacher)}]}))
            continue
        k, q, logp_range = _parse_label_name(label)
        path, _ = setup.archive(k, args.temperature, device, quantization=q, logp_range=logp_range)
        kinds.append((f"kd {label}", {
            "strategy": "frame-kl", "lambda": args.kd_lambda, "teachers": [{"name": "teacher", "archive": str(path)}]}))
    test = fb / "cuts_test_wb.jsonl.gz"
    print(f"\n(d) WER of {base['model']['name']} students ({args.student_config}), {args.epochs} epochs, "
          f"seeds {args.seeds}, teacher {setup.teacher_name}, T={args.temperature:g}, lambda={args.kd_lambda:g}"
          + (f", {' '.join(args.overrides)}" if args.overrides else ""))
    print(f"    {'targets':<12} {'dev WER %':>10} {'test WER %':>11} {'vs kd dense':>12} {'train s':>8}  per seed (test)")
    teacher_wer = run_decode(Path(setup.teacher), test, setup.lang_dir, setup.work / "decode_teacher",
                             "greedy", device)["wer"]
    dense_test: Optional[float] = None
    for name, kd in kinds:
        dev, tst, secs = [], [], []
        for seed in args.seeds:
            cfg = copy.deepcopy(base)
            cfg["train"]["seed"] = seed
            if kd is not None:
                cfg["kd"] = kd
            exp = setup.work / "students" / f"{name.replace(' ', '_')}_seed{seed}"
            if args.reuse_students and (exp / "train_summary.yaml").is_file():  # trained by an earlier run
                last = max(exp.glob("epoch-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
                history = load_checkpoint(last)["train_state"]["history"]
                secs.append(float(yaml.safe_load((exp / "train_summary.yaml").read_text())["train_seconds"]))
            else:
                shutil.rmtree(exp, ignore_errors=True)
                t0 = time.perf_counter()
                history = train_from_config(cfg, exp, resume=False).history
                secs.append(time.perf_counter() - t0)
            if kd is not None and "train_kd" not in history[-1]:
                raise SystemExit(f"{exp}: the trainer ignored the kd section (no train_kd in its history)")
            dev.append(min(h.get("dev_wer", float("nan")) for h in history))
            tst.append(run_decode(exp / "best.pt", test, setup.lang_dir, exp / "decode_test", "greedy", device)["wer"])
        mean_test = statistics.mean(tst)
        if name == "kd dense":
            dense_test = mean_test
        rel = f"{100 * (mean_test - dense_test) / dense_test:+11.2f}%" if dense_test else f"{'-':>12}"
        print(f"    {name:<12} {statistics.mean(dev):10.2f} {mean_test:11.2f} {rel} {statistics.mean(secs):8.1f}  "
              + " ".join(f"{x:.2f}" for x in tst), flush=True)
    print(f"    (teacher test WER {teacher_wer:.2f}%; dev WER: best epoch, greedy; test: best.pt, greedy;\n"
          "     vs kd dense: relative difference of the mean test WER to the students of dense float16 labels)")


# --------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--data-dir", type=Path, default=None,
                   help="Recipe data dir (fbank/cuts_{train,dev,test}_wb.jsonl.gz, fbank/cmvn_wb.json, lang_char/).")
    p.add_argument("--teacher", type=Path, default=None, help="Teacher checkpoint trained on --data-dir's lang_char.")
    p.add_argument("--teacher-config", type=Path, default=REPO / "egs/demo/conf/model_vgg.yaml",
                   help="Model config of the untrained teacher used without --teacher.")
    p.add_argument("--student-config", type=Path, default=REPO / "egs/demo/conf/model_cnn.yaml")
    p.add_argument("--train-config", type=Path, default=REPO / "egs/demo/conf/train.yaml", help="Used by (d).")
    p.add_argument("--work-dir", type=Path, default=None, help="Outputs (default: a temporary directory, removed).")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's); 1 gives steadier CPU timings on a shared machine.")
    p.add_argument("--num-cuts", type=int, default=64, help="Synthetic cuts (without --data-dir).")
    p.add_argument("--duration", type=float, default=4.0, help="Mean synthetic cut duration, seconds.")
    p.add_argument("--num-features", type=int, default=80, help="Synthetic feature dimension.")
    p.add_argument("--max-duration", type=float, default=60.0, help="(a): seconds of audio per batch.")
    p.add_argument("--steps", type=int, default=8, help="(a): batches per round.")
    p.add_argument("--rounds", type=int, default=3, help="(a): timed rounds over the batches (median reported).")
    p.add_argument("--dump-rounds", type=int, default=3, help="(c): dumps of each kind (median reported).")
    p.add_argument("--vocabs", type=_ints, default=[30, 100, 500], help="(b): vocabulary sizes.")
    p.add_argument("--lang", default="lang_char", help="Lang dir under --data-dir (lang_char, lang_bpe, ...).")
    p.add_argument("--wer-labels", type=lambda s: [x for x in s.split(",") if x], default=None,
                   help="(d): students to train, e.g. ctc,dense,top8,top8-u8,top8-u8r8,online,online-clean (-u8: compact, -u8rR: "
                        "compact with 8-bit steps of [-R, 0] instead of the default range; "
                        "online: the teacher run in the training process on the student's features, online-clean: "
                        "on them without gain, noise and masks) "
                        "[default: ctc, dense and top<K> for each of --ks].")
    p.add_argument("--only", type=lambda s: set(s.split(",")), default={"a", "b", "c", "d"},
                   help="Parts to run, e.g. b,d [default: all].")
    p.add_argument("--ks", type=_ints, default=[4, 8, 16], help="(b), (d): top-k sizes.")
    p.add_argument("--temperature", type=float, default=2.0, help="Soft-label temperature.")
    p.add_argument("--kd-lambda", type=float, default=0.5, help="(d): weight of the KD term.")
    p.add_argument("--epochs", type=int, default=12, help="(d): training epochs per student.")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="(d): override of the students' config, e.g. --set data.max_duration=40 (repeatable).")
    p.add_argument("--seeds", type=_ints, default=[1], help="(d): student seeds (WER averaged).")
    p.add_argument("--skip-train", action="store_true", help="Leave out (d).")
    p.add_argument("--reuse-students", action="store_true",
                   help="(d): take a student already trained in --work-dir (train_summary.yaml) as it is.")
    args = p.parse_args()
    if args.teacher is not None and args.data_dir is None:
        p.error("--teacher needs --data-dir (its cuts and token set)")
    device = _resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    tmp = None
    if args.work_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_kd_")
        work = Path(tmp.name)
    else:
        work = args.work_dir
        work.mkdir(parents=True, exist_ok=True)
    try:
        setup = Setup(args, work)
        print(f"kdasr KD benchmark: {len(setup.cuts)} cuts ({setup.hours * 3600:.0f} s), vocab "
              f"{setup.tok.vocab_size}, device {device}, {torch.get_num_threads()} CPU threads")
        V = setup.tok.vocab_size
        dump_ks: list[Optional[int]] = [None] + ([8] if 8 < V else [])
        if "c" in args.only or "a" in args.only:
            archives = bench_dump(setup, dump_ks, args.temperature, device.type, args.dump_rounds)
        if "a" in args.only:
            student_cfg = load_config(args.student_config)["model"]
            bench_steps(setup, archives, student_cfg, args.max_duration, args.steps, args.rounds, device,
                        args.temperature)
        if "b" in args.only:
            bench_bytes(setup.cuts, work, args.vocabs, args.ks)
            bench_teacher_labels(setup, [k for k in args.ks if k == 8] or args.ks[:1], args.temperature, device.type)
        if "d" not in args.only or args.skip_train:
            print("\n(d) skipped (--skip-train or --only)")
        elif args.data_dir is None or args.teacher is None:
            print("\n(d) skipped: needs --data-dir and --teacher (a real corpus and a trained teacher)")
        else:
            bench_wer(setup, args, device.type)
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
