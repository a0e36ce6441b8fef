"""CUDA paths: greedy and CTC beam search equal the CPU's, and training runs with AMP. Skipped without a GPU."""
from __future__ import annotations

import copy

import pytest
import torch
import yaml
from lhotse import CutSet

from kdasr.data.tokenizer import Tokenizer
from kdasr.decode import make_decoder
from kdasr.decode.run import decode_cuts
from kdasr.models.checkpoint import load_model
from kdasr.train.build import train_from_config
from synth import synth_corpus

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    corpus = synth_corpus(tmp_path_factory.mktemp("gpu"), num_train=32, num_dev=8)
    root, cfg, dev = corpus["root"], corpus["cfg"], corpus["dev"]
    cfg["model"] = {"name": "vgg", "channels": [8, 16], "hidden": 64, "num_layers": 1}
    cfg["train"] = {"epochs": 3, "lr": 3e-3, "warmup_steps": 5, "save_every_n": 0, "device": "cuda", "amp": True}
    state = train_from_config(copy.deepcopy(cfg), root / "exp")
    return {"root": root, "state": state, "dev": dev}


def test_training_on_cuda_with_amp(trained):
    hist = trained["state"].history
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in hist)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]


def test_greedy_on_gpu_equals_cpu(trained):
    root = trained["root"]
    model, _ = load_model(root / "exp" / "best.pt")
    tok = Tokenizer.from_dir(root / "lang")
    cuts = CutSet.from_cuts(trained["dev"])
    out = {}
    for dev in ("cpu", "cuda"):
        decoder = make_decoder("greedy", tok, device=dev)
        out[dev] = decode_cuts(model.to(dev), cuts, decoder, torch.device(dev)).hyps
    assert out["cpu"] == out["cuda"]


@pytest.mark.parametrize("margin", [4.0, 1.0])
def test_cuda_beam_search_and_greedy_equal_cpu(tmp_path, margin):
    """torchaudio's cuda_ctc_decoder (lexicon-free) against flashlight's CPU search, and greedy, on the same log-probs."""
    from test_graph import batch, make_char_lang, random_peaky

    tok = make_char_lang(tmp_path / "lang")
    gen = torch.Generator().manual_seed(3)
    lp, lens = batch([random_peaky(tok, ["ONE", "TWO", "THREE", "ON", "THE"], n, gen, margin=margin)
                      for n in (1, 2, 3, 4, 5, 6, 7, 3)])
    cpu_beam = make_decoder("beam", tok, device="cpu", beam_size=10)
    cuda_beam = make_decoder("beam", tok, device="cuda", beam_size=10)
    assert cuda_beam.use_cuda
    assert cuda_beam(lp.cuda(), lens.cuda()) == cpu_beam(lp, lens)
    assert make_decoder("greedy", tok, device="cuda")(lp.cuda(), lens.cuda()) == make_decoder("greedy", tok)(lp, lens)



def test_online_kd_student_trains_on_cuda_under_bf16(trained, tmp_path):
    """An online teacher on the GPU (the trainer's bf16 autocast, no gradients) teaches a CNN student there."""
    cfg = yaml.safe_load((trained["root"] / "exp" / "config.yaml").read_text())  # data, train: cuda with amp
    cfg["model"] = {"name": "cnn", "channels": 32, "num_layers": 2}
    cfg["train"]["epochs"] = 2
    cfg["kd"] = {"teachers": [{"name": "t", "checkpoint": str(trained["root"] / "exp" / "best.pt")}]}
    state = train_from_config(cfg, tmp_path / "student")
    assert all(torch.isfinite(torch.tensor(h["train_kd"])) for h in state.history)
