"""Fixtures shared by several test modules (helpers that are not fixtures live in synth.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from synth import AURORA_TEST, AURORA_TRAIN, LM_TEXTS, make_char_lang, write_audio

from kdasr.data.tokenizer import Tokenizer
from kdasr.decode.graph import build_graph


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
