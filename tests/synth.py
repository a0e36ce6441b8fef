"""Data the tests make themselves (helpers shared by several test modules; fixtures are in conftest.py).

- Cuts with precomputed features that encode their transcript
  (:func:`make_feature_cuts`, :func:`synth_corpus`): each character has a
  random prototype feature vector; an utterance is the prototypes of its
  characters, each held for a few frames, plus noise. A model can learn it
  in a few steps, which is all the training tests need; the real speech path
  is covered by the demo-corpus tests.
- Designed CTC posteriors over a small char token set, for graph and
  decoder tests (:func:`posteriors`, :func:`random_peaky`, :func:`ambiguous`).
- Audio files and a mock Aurora-4 tree for the importers.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import soundfile as sf
import torch
import yaml
from click.testing import CliRunner
from lhotse import CutSet, MonoCut, NumpyFilesWriter, SupervisionSegment
from lhotse.features.base import Features

from kdasr.cli.main import cli
from kdasr.data.tokenizer import Tokenizer, build_char_lang, texts_from_cuts
from kdasr.models import build_model
from kdasr.train.checkpoint import save_checkpoint
from kdasr.utils.io import save_manifest

WORDS = ["ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "ON", "OFF"]


def make_feature_cuts(out_dir: Path, num_cuts: int = 24, num_features: int = 20, seed: int = 0,
                      prefix: str = "utt", nan_cuts: tuple[int, ...] = ()) -> CutSet:
    """``num_cuts`` cuts; the features of the cuts indexed by ``nan_cuts`` hold a NaN."""
    rng = np.random.default_rng(seed)
    protos = np.random.default_rng(1234).normal(size=(128, num_features)).astype(np.float32)
    out_dir.mkdir(parents=True, exist_ok=True)
    cuts = []
    with NumpyFilesWriter(out_dir / f"{prefix}_feats") as writer:
        for i in range(num_cuts):
            text = " ".join(rng.choice(WORDS, size=rng.integers(1, 4)))
            frames = []
            for ch in text:
                frames += [protos[ord(ch)]] * int(rng.integers(6, 10))
            feats = np.stack(frames) + 0.3 * rng.normal(size=(len(frames), num_features)).astype(np.float32)
            if i in nan_cuts:
                feats[len(feats) // 2, 0] = np.nan
            cid = f"{prefix}-{i:03d}"
            dur = round(len(frames) * 0.01, 2)
            cut = MonoCut(id=cid, start=0, duration=dur, channel=0,
                          supervisions=[SupervisionSegment(id=cid, recording_id=cid, start=0, duration=dur, text=text)])
            key = writer.write(cid, feats)
            cut.features = Features(
                type="synthetic", num_frames=len(frames), num_features=num_features, frame_shift=0.01,
                sampling_rate=16000, start=0, duration=dur, storage_type=writer.name,
                storage_path=str(writer.storage_path), storage_key=key,
            )
            cuts.append(cut)
    return CutSet.from_cuts(cuts)


def synth_corpus(root: Path, num_train: int = 32, num_dev: int = 6) -> dict:
    """Train and dev manifests of :func:`make_feature_cuts`, a char lang over the train texts, and a
    tiny CNN training config over them: ``{root, cfg, paths: {train, dev}, train, dev}``."""
    train = make_feature_cuts(root / "feats", num_cuts=num_train, seed=0, prefix="tr")
    dev = make_feature_cuts(root / "feats", num_cuts=num_dev, seed=1, prefix="dv")
    paths = {"train": root / "cuts_train.jsonl.gz", "dev": root / "cuts_dev.jsonl.gz"}
    train.to_file(paths["train"])
    dev.to_file(paths["dev"])
    build_char_lang(texts_from_cuts(train), root / "lang")
    cfg = {
        "data": {"train_cuts": str(paths["train"]), "dev_cuts": str(paths["dev"]),
                 "lang_dir": str(root / "lang"), "max_duration": 3.0, "num_buckets": 2},
        "model": {"name": "cnn", "channels": 32, "num_layers": 2},
        "train": {"epochs": 2, "lr": 3e-3, "warmup_steps": 5, "save_every_n": 0,
                  "early_stop_patience": 0, "log_every_n": 1},
    }
    return {"root": root, "cfg": cfg, "paths": paths, "train": train, "dev": dev}


# The char token set is built from these (letters E H N O R T W); FOUR and ZEBRA
# in the LM text below use letters outside it.
TOKEN_TEXTS = ["ONE TWO THREE", "ON THE"]
LM_TEXTS = [
    "ONE TWO THREE", "ONE TWO", "ONE TWO", "ONE TWO THREE", "ON THE TWO", "ON THE", "ON THE",
    "THE ONE", "TWO ONE", "THREE TWO ONE", "ZEBRA ONE TWO", "ONE FOUR",
]
GRAPH_WORDS = ["ONE", "TWO", "THREE", "ON", "THE"]
"""The words of the token texts: every word a lexicon over them spells."""

Frame = Union[int, dict[int, float]]  # a token id (probability ~1) or {token id: probability}


def make_char_lang(lang_dir: Path) -> Tokenizer:
    return build_char_lang(TOKEN_TEXTS, lang_dir)


def frames_for(tok: Tokenizer, text: str, hold: int = 2) -> list[int]:
    """A CTC frame path for ``text``: each token held ``hold`` frames, blanks around it."""
    frames = [0]
    for i in tok.encode(text):
        frames += [i] * hold + [0]
    return frames


def posteriors(frames: Sequence[Frame], vocab_size: int, floor: float = 1e-4) -> torch.Tensor:
    """Log-probs ``(T, V)``: the given token (or distribution) per frame, ``floor`` elsewhere."""
    probs = torch.full((len(frames), vocab_size), floor)
    for t, f in enumerate(frames):
        for i, p in ({f: 1.0} if isinstance(f, int) else f).items():
            probs[t, i] = p
    return (probs / probs.sum(-1, keepdim=True)).log()


def batch(items: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad ``(T_i, V)`` log-probs into ``(B, T, V)`` (padding frames are garbage on purpose)."""
    lens = torch.tensor([x.shape[0] for x in items])
    out = torch.randn(len(items), max(int(lens.max()), 1), items[0].shape[1]).log_softmax(-1)
    for b, x in enumerate(items):
        out[b, : x.shape[0]] = x
    return out, lens


def random_peaky(tok: Tokenizer, words: Sequence[str], n_words: int, gen: torch.Generator,
                 margin: float = 4.0) -> torch.Tensor:
    """Random logits whose greedy path spells ``n_words`` random ``words``.

    Each token lasts 1-3 frames with 0-2 blanks between, so repeats and
    word-final repeats both occur; the path token gets ``margin`` above the
    best other logit, so greedy search recovers exactly that text.
    """
    idx = torch.randint(len(words), (n_words,), generator=gen).tolist()
    text = " ".join(words[i] for i in idx)
    frames: list[int] = []
    prev = None
    for t in tok.encode(text):
        if t == prev or torch.rand(1, generator=gen).item() < 0.5:
            frames += [0] * (1 + int(torch.randint(2, (1,), generator=gen)))
        frames += [t] * (1 + int(torch.randint(3, (1,), generator=gen)))
        prev = t
    logits = torch.randn(len(frames), tok.vocab_size, generator=gen)
    for i, f in enumerate(frames):
        logits[i, f] = logits[i].max() + margin
    return logits.log_softmax(-1)


def ambiguous(tok: Tokenizer, p_e: float, second: str) -> torch.Tensor:
    """'ON' or 'ONE' (the E frame has probability ``p_e``, blank the rest), then ``second``: the LM decides."""
    t = tok.token_to_id
    frames = [0, t["O"], 0, t["N"], {t["E"]: p_e, 0: 1.0 - p_e}, 0, t["▁"]] + frames_for(tok, second)
    return posteriors(frames, tok.vocab_size)


def write_audio(path: Path, seconds: float = 0.3, sr: int = 16000, fmt: Optional[str] = None, seed: int = 0) -> Path:
    """A short sine-plus-noise file; ``fmt='NIST'`` writes a SPHERE file (Aurora-4 .wv1/.wv2)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)
    sf.write(path, x.astype(np.float32), sr, format=fmt, subtype="PCM_16")
    return path


AURORA_TRAIN = {"011": ["011c0201", "011c0202"], "012": ["012c0201"], "013": ["013c0201"]}
AURORA_TEST = ["440c0201", "441c0201"]


def write_checkpoint(path: Path, tok: Tokenizer, num_features: int = 20) -> Path:
    torch.manual_seed(0)
    model = build_model({"name": "cnn", "channels": 8, "num_layers": 1}, num_features, tok.vocab_size)
    save_checkpoint(path, {"model": model.state_dict(), "model_cfg": model.model_cfg, "num_features": num_features,
                           "vocab_size": tok.vocab_size, "lang_hash": tok.hash})
    return path


def text_cuts(path: Path, texts: dict[str, str]) -> Path:
    """Cuts without audio (the network is replaced): only ids, durations and transcripts."""
    cuts = [MonoCut(id=cid, start=0, duration=1.0, channel=0,
                    supervisions=[SupervisionSegment(id=cid, recording_id=cid, start=0, duration=1.0, text=text)])
            for cid, text in texts.items()]
    save_manifest(CutSet.from_cuts(cuts), path)
    return path


def decode(setup: dict, out: Path, cuts: Path, *args: str) -> dict:
    """``kdasr decode`` of ``cuts`` with the checkpoint and lang of ``setup`` (the decode_setup fixture); its decode.yaml."""
    res = CliRunner().invoke(cli, ["decode", "--checkpoint", str(setup["ckpt"]), "--cuts", str(cuts),
                                   "--lang-dir", str(setup["lang"]), "--out-dir", str(out), "--device", "cpu", *args])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return yaml.safe_load((out / "decode.yaml").read_text())
