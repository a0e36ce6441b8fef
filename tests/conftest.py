"""Fixtures shared by several test modules (helpers that are not fixtures live in synth.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import torch
from lhotse import CutSet

import kdasr.decode.run
from kdasr.data.tokenizer import Tokenizer
from kdasr.decode.graph import build_graph
from kdasr.models.inference import ModelOutputs
from synth import AURORA_TEST, AURORA_TRAIN, LM_TEXTS, make_char_lang, write_audio, write_checkpoint


@pytest.fixture
def one_thread():
    """Tiny models: threads only add overhead on shared cores (and make timings noisy)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def char_graph(tmp_path_factory) -> tuple[Tokenizer, Path]:
    """The char token set of synth.TOKEN_TEXTS and its TLG graph with a 3-gram LM of synth.LM_TEXTS."""
    lang = tmp_path_factory.mktemp("lang_char")
    tok = make_char_lang(lang)
    return tok, build_graph(lang, LM_TEXTS, order=3)


@pytest.fixture
def aurora4_tree(tmp_path: Path) -> Path:
    """A mock Aurora-4: 16/8 kHz copies, SPHERE .wv1/.wv2, WSJ .dot and .lsn transcripts.

    root/aurora4/train_si84_clean/wav16k/011/011c0201.wv1
    root/aurora4/train_si84_multi/wav8k/012/012c0201.wv2
    root/aurora4/test_eval92/wav16k/05/440c0201.wv1
    root/aurora4/transcripts/si_tr_s.dot, test_eval92.lsn
    """
    base = tmp_path / "corpus" / "aurora4"
    seed = 0
    for rate_dir, sr in (("wav16k", 16000), ("wav8k", 8000)):
        for set_name, ext in (("train_si84_clean", ".wv1"), ("train_si84_multi", ".wv2")):
            for spk, utts in AURORA_TRAIN.items():
                for utt in utts:
                    seed += 1
                    write_audio(base / set_name / rate_dir / spk / f"{utt}{ext}", 0.2, sr, fmt="NIST", seed=seed)
        for cond in range(1, 15):
            for utt in AURORA_TEST:
                ext = ".wv1" if cond <= 7 else ".wv2"
                seed += 1
                path = base / "test_eval92" / rate_dir / f"{cond:02d}" / f"{utt}{ext}"
                write_audio(path, 0.2, sr, fmt="NIST", seed=seed)
    tr = base / "transcripts"
    tr.mkdir()
    (tr / "si_tr_s.dot").write_text(
        "".join(f"THE {u.upper()} SENTENCE  \\COMMA HERE ({u})\n" for us in AURORA_TRAIN.values() for u in us)
    )
    (tr / "test_eval92.lsn").write_text("".join(f"TEST {u.upper()} SENTENCE ({u.upper()})\n" for u in AURORA_TEST))
    return tmp_path / "corpus"


@pytest.fixture(scope="session")
def decode_setup(tmp_path_factory) -> dict:
    """A char lang, a tiny CNN checkpoint and a TLG graph, for decode CLI tests whose network is replaced."""
    root = tmp_path_factory.mktemp("decode_cli")
    tok = make_char_lang(root / "lang")
    return {"root": root, "tok": tok, "lang": root / "lang", "ckpt": write_checkpoint(root / "model.pt", tok),
            "graph": build_graph(root / "lang", LM_TEXTS, order=3)}


@pytest.fixture
def network_output(monkeypatch) -> dict[str, torch.Tensor]:
    """Fill the returned dict with cut id -> log-probs ``(T, V)``; decoding then uses those, 3 cuts a batch."""
    table: dict[str, torch.Tensor] = {}

    def fake(model, cuts: CutSet, device, max_duration) -> Iterator[ModelOutputs]:
        cuts = list(cuts)
        for i in range(0, len(cuts), 3):
            chunk = cuts[i:i + 3]
            items = [table[c.id] for c in chunk]
            lens = torch.tensor([x.shape[0] for x in items])
            lp = torch.full((len(items), int(lens.max()), items[0].shape[1]), -1e4)
            for b, x in enumerate(items):
                lp[b, : x.shape[0]] = x
            yield ModelOutputs(chunk, lp, lens, lens * 4)

    monkeypatch.setattr(kdasr.decode.run, "iter_model_outputs", fake)
    return table
