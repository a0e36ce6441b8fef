"""Oracle Teacher: it reads the transcript but must not copy it.

Synthetic task where the audio determines the tokens: each token is a
spectral pattern held for 4-6 frames, under heavy noise (so reading the
transcript is tempting). Three tiny models are trained once per module:
an acoustic-only CNN teacher, the Oracle Teacher, and a naive copier (same
network with positions on both sides and clean transcripts). Each dev
utterance A is then fed with the transcript of another utterance B.
Figures are printed (run with ``-s``).
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from kdasr.ctc import CtcObjective, ctc_loss_hard, greedy_search
from kdasr.data.tokenizer import Tokenizer, build_char_lang, texts_from_cuts
from kdasr.distill.archive import ArchiveMeta, dump_soft_labels, load_archive, load_probs
from kdasr.distill.losses import spike_agreement
from kdasr.distill.oracle import dump_inputs, transcript_inputs
from kdasr.models import build_model, output_lengths
from kdasr.models.common import model_inputs, pad_targets
from synth import make_feature_cuts

V, F, NOISE = 11, 16, 1.5
STEPS, BATCH, TARGET_DEV_LOSS = 250, 16, 3.0
ENCODER = {"name": "cnn", "channels": 32, "num_layers": 2}
ORACLE = {"name": "oracle", "encoder": ENCODER, "d_model": 32, "attention_heads": 4}
NAIVE = dict(ORACLE, text_positions=True, token_substitution=0.0, token_deletion=0.0, transcript_dropout=0.0)
ACOUSTIC = {"name": "cnn", "channels": 64, "num_layers": 3}  # about the oracle's size


def _utterances(n: int, seed: int) -> tuple[list[torch.Tensor], list[list[int]]]:
    """Token i is spectral pattern i (4-6 frames, sometimes followed by a silent frame) plus noise."""
    rng = np.random.default_rng(seed)
    protos = np.random.default_rng(99).normal(size=(V, F)).astype(np.float32)
    protos[0] = 0.0
    feats, targets = [], []
    for _ in range(n):
        toks = [int(t) for t in rng.integers(1, V, size=int(rng.integers(3, 7)))]
        frames = []
        for t in toks:
            frames += [protos[t]] * int(rng.integers(4, 7)) + [protos[0]] * int(rng.integers(0, 2))
        x = np.stack(frames) + NOISE * rng.normal(size=(len(frames), F))
        feats.append(torch.from_numpy(x.astype(np.float32)))
        targets.append(toks)
    return feats, targets


def _batch(feats: list[torch.Tensor], targets: list[list[int]], idx) -> dict:
    lens = torch.tensor([feats[i].shape[0] for i in idx])
    x = torch.zeros(len(idx), int(lens.max()), F)
    for j, i in enumerate(idx):
        x[j, : lens[j]] = feats[i]
    return {"features": x, "feature_lens": lens, "targets": [targets[i] for i in idx]}


@torch.no_grad()
def _run(model: torch.nn.Module, batch: dict, transcripts=None) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    kw = pad_targets(transcripts) if transcripts is not None else {}
    return model(batch["features"], batch["feature_lens"], **kw)


def _train(cfg: dict, objective, train: tuple, dev: dict) -> dict:
    """Adam on random minibatches; dev CTC loss (with the transcript for oracles) every 25 steps."""
    torch.manual_seed(0)
    model = build_model(cfg, F, V)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    oracle = "targets" in model.inputs
    reached, elapsed = None, 0.0
    for step in range(1, STEPS + 1):
        t0 = time.perf_counter()
        model.train()
        loss, _ = objective(model, _batch(*train, rng.choice(len(train[0]), BATCH, replace=False)), step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        elapsed += time.perf_counter() - t0
        if reached is None and step % 25 == 0:
            logits, lens = _run(model, dev, dev["targets"] if oracle else None)
            if float(ctc_loss_hard(logits, lens, dev["targets"])) < TARGET_DEV_LOSS:
                reached = (step, elapsed)
    return {"model": model, "reached": reached, "seconds": elapsed, "params": model.num_params()}


@pytest.fixture(scope="module")
def trained() -> dict:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only add overhead on shared cores
    try:
        train, dev = _utterances(512, 0), _batch(*_utterances(48, 1), range(48))
        out = {"dev": dev}
        for name, cfg, objective in (("acoustic", ACOUSTIC, CtcObjective()), ("oracle", ORACLE, CtcObjective()),
                                     ("naive", NAIVE, CtcObjective())):
            out[name] = _train(cfg, objective, train, dev)
        return out
    finally:
        torch.set_num_threads(threads)


def _mismatch_figures(trained: dict, name: str) -> dict:
    """Feed each dev utterance A with the transcript of B (the next one): how often is the output B, A?"""
    dev, model = trained["dev"], trained[name]["model"]
    refs = dev["targets"]
    others = [refs[(i + 1) % len(refs)] for i in range(len(refs))]
    assert all(a != b for a, b in zip(refs, others))
    logits, lens = _run(model, dev, others)
    acoustic, _ = _run(trained["acoustic"]["model"], dev)
    hyps = greedy_search(logits, lens)
    return {
        "copy_rate": float(np.mean([h == b for h, b in zip(hyps, others)])),
        "correct_rate": float(np.mean([h == a for h, a in zip(hyps, refs)])),
        "spike_agreement": spike_agreement(logits, acoustic, lens, symmetric=True),
        "acoustic_correct": float(np.mean([h == a for h, a in zip(greedy_search(acoustic, lens), refs)])),
    }


def _copy_failures(fig: dict) -> list[str]:
    """What makes a teacher fed audio A and transcript B a copier rather than a listener."""
    failures = []
    if fig["copy_rate"] > 0.1:
        failures.append("outputs B")
    if fig["correct_rate"] < max(0.3, 0.6 * fig["acoustic_correct"]):
        failures.append("does not output A")
    if fig["spike_agreement"] < 0.5:
        failures.append("spikes unlike the acoustic-only teacher")
    return failures


def test_oracle_follows_the_audio_not_the_transcript(trained):
    fig = _mismatch_figures(trained, "oracle")
    print(f"\noracle, audio A + transcript B: {fig}")
    assert _copy_failures(fig) == []


def test_naive_copier_copies(trained):
    """Without the anti-copy mechanisms the same network outputs B and fails every check above."""
    fig = _mismatch_figures(trained, "naive")
    print(f"\nnaive copier, audio A + transcript B: {fig}")
    assert len(_copy_failures(fig)) == 3
    assert fig["copy_rate"] >= 0.2


def test_training_time_to_dev_loss(trained):
    rows = {n: (trained[n]["params"], trained[n]["reached"], round(trained[n]["seconds"], 2))
            for n in ("acoustic", "oracle")}
    print(f"\nparams, (steps, seconds) to dev CTC loss < {TARGET_DEV_LOSS}, total seconds for {STEPS} steps: {rows}")
    assert 0.7 < trained["oracle"]["params"] / trained["acoustic"]["params"] < 1.3
    assert trained["acoustic"]["reached"] is not None and trained["oracle"]["reached"] is not None
    # the transcript is a strong hint: the oracle gets there in no more steps than the acoustic teacher
    assert trained["oracle"]["reached"][0] <= trained["acoustic"]["reached"][0]


def test_forward_contract_and_dump_with_transcripts(tmp_path):
    torch.manual_seed(0)
    cuts = make_feature_cuts(tmp_path / "feats", num_cuts=5)
    tok = build_char_lang(texts_from_cuts(cuts), tmp_path / "lang")
    model = build_model(dict(ORACLE, encoder={"name": "vgg", "channels": [4, 8], "hidden": 32, "num_layers": 1}),
                        20, tok.vocab_size).eval()
    feats, lens = torch.randn(2, 23, 20), torch.tensor([23, 9])
    tokens = pad_targets([[1, 2, 3], []])
    logits, out_lens = model(feats, lens, **tokens)
    assert logits.shape == (2, output_lengths(23), tok.vocab_size)
    assert out_lens.tolist() == [output_lengths(23), output_lengths(9)]
    alone, _ = model(feats, lens)  # no transcript: the null slot only, same as an empty one
    assert torch.allclose(alone[1], logits[1], atol=1e-5) and not torch.allclose(alone[0], logits[0])
    with pytest.raises(ValueError, match="token_lens"):
        model(feats, lens, tokens=tokens["tokens"])

    meta = ArchiveMeta(teacher="oracle", checkpoint="exp/oracle/best.pt", lang_hash=tok.hash,
                       vocab_size=tok.vocab_size)
    dump_soft_labels(model, cuts, tmp_path / "arch", meta, progress=False,
                     model_inputs=transcript_inputs(Tokenizer.from_dir(tmp_path / "lang")))
    _, archived = load_archive(tmp_path / "arch")
    for c in archived:
        orig = cuts[c.id]
        x = torch.from_numpy(orig.load_features()).unsqueeze(0)
        expect, _ = model(x, torch.tensor([x.shape[1]]), **pad_targets([tok.encode(orig.supervisions[0].text)]))
        got = torch.from_numpy(load_probs(c, tok.vocab_size))
        assert torch.allclose(got, torch.softmax(expect[0], -1), atol=2e-3)


def test_objectives_and_dump_ask_the_model_what_it_reads(tmp_path) -> None:
    """The transcript goes to a model that declares it as an input, whatever its name, and to no other."""

    class Reads(torch.nn.Module):
        inputs = ("features", "targets")

    class Wrapped(torch.nn.Module):  # as DistributedDataParallel wraps a model
        def __init__(self) -> None:
            super().__init__()
            self.module = Reads()

    targets = [[3, 1], [2]]
    got = model_inputs(Reads(), targets)
    assert got["tokens"].tolist() == [[3, 1], [2, 0]] and got["token_lens"].tolist() == [2, 1]
    assert model_inputs(Wrapped(), targets)["token_lens"].tolist() == [2, 1]
    assert model_inputs(build_model(ACOUSTIC, F, V), targets) == {}
    assert dump_inputs({"model_cfg": ACOUSTIC}) is None
    cuts = make_feature_cuts(tmp_path / "feats", num_cuts=2)
    tok = build_char_lang(texts_from_cuts(cuts), tmp_path / "lang")
    ckpt = {"model_cfg": ORACLE, "config": {"data": {"lang_dir": str(tmp_path / "lang")}}, "lang_hash": tok.hash}
    inputs = dump_inputs(ckpt)(list(cuts))
    assert inputs["token_lens"].tolist() == [len(tok.encode(c.supervisions[0].text)) for c in cuts]
    with pytest.raises(ValueError, match="another token set"):
        dump_inputs(dict(ckpt, lang_hash="0" * 64))
