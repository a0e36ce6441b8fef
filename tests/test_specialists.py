"""Unified ensemble of specialists: subset clustering, both combination rules, the model and its objective."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import kdasr.train.build as build
from kdasr.ctc import CtcObjective
from kdasr.data.tokenizer import Tokenizer
from kdasr.distill.specialists import SpecialistObjective, cluster_tokens, load_subsets, map_targets, save_subsets
from kdasr.models import build_model, output_lengths
from kdasr.models.heads import (
    average_rule,
    cover_matrix,
    hinton_gradient,
    hinton_rule,
    uncovered_matrix,
    validate_subsets,
)
from synth import synth_corpus


def _log(x: list[float]) -> torch.Tensor:
    return torch.log(torch.tensor([x], dtype=torch.float64))


def test_clustering_recovers_two_confusion_blocks():
    # A generalist that confuses tokens 1-4 among themselves and 5-8 among themselves, plus blank frames.
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(2000):
        true = int(rng.integers(1, 9))
        p = np.full(9, 1e-3)
        if rng.random() < 0.5:
            p[0] = 1.0  # blank frame
        else:
            block = range(1, 5) if true <= 4 else range(5, 9)
            for t in block:
                p[t] = rng.random() * 0.3
            p[true] += 1.0
        rows.append(p / p.sum())
    subsets = cluster_tokens(np.array(rows), 2)
    assert subsets == [[1, 2, 3, 4], [5, 6, 7, 8]]
    # overlap adds outside tokens only where they covary with the subset (none do across blocks)
    assert cluster_tokens(np.array(rows), 2, overlap=1) == subsets
    with pytest.raises(ValueError, match="num_subsets"):
        cluster_tokens(np.array(rows), 9)


def test_subsets_validation_targets_and_yaml(tmp_path):
    with pytest.raises(ValueError, match="in no specialist subset"):
        validate_subsets([[1, 2]], 4)
    with pytest.raises(ValueError, match="blank"):
        validate_subsets([[0, 1, 2, 3]], 4)
    # one dustbin (here 3) per out-of-subset token, so the head spikes as often as the full model
    assert map_targets([[1, 4, 5, 2], []], [2, 1]) == [[2, 3, 3, 1], []]

    class Tok:
        tokens = ["<blk>", "a", "b", "c"]
        token_to_id = {t: i for i, t in enumerate(tokens)}
        vocab_size, blank_id, lang_dir = 4, 0, "lang"

    save_subsets([[1, 2], [2, 3]], tmp_path / "s.yaml", Tok.tokens)
    assert "- a" in (tmp_path / "s.yaml").read_text()
    assert load_subsets(tmp_path / "s.yaml", Tok()) == [[1, 2], [2, 3]]


def combine_average(heads, subsets, vocab_size, generalist=None):
    return average_rule(heads, subsets, cover_matrix(subsets, vocab_size, 0, generalist is not None), generalist)


def combine_hinton(heads, subsets, vocab_size, generalist=None, steps=30):
    cover = cover_matrix(subsets, vocab_size, 0, generalist is not None)
    return hinton_rule(heads, subsets, cover, uncovered_matrix(subsets, vocab_size), generalist, steps, 2.0)


def test_average_rule_by_hand():
    # Heads over [blank, subset, dustbin]; token 2 is covered by both heads, the dustbins are dropped.
    a = _log([0.4, 0.3, 0.2, 0.1])  # blank, 1, 2, dustbin
    b = _log([0.5, 0.1, 0.3, 0.1])  # blank, 2, 3, dustbin
    out = combine_average([a, b], [[1, 2], [2, 3]], 4).exp()
    # softmax of [(log .4 + log .5)/2, log .3, (log .2 + log .1)/2, log .3], computed by hand:
    expect = [0.37624133, 0.25239036, 0.11897796, 0.25239036]
    assert torch.allclose(out[0], torch.tensor(expect, dtype=out.dtype), atol=1e-7)
    # a generalist counts as one more head that covers every token
    g = _log([0.25, 0.25, 0.25, 0.25])
    out = combine_average([a, b], [[1, 2], [2, 3]], 4, generalist=g).exp()
    u = [(0.4 * 0.5 * 0.25) ** (1 / 3), (0.3 * 0.25) ** 0.5, (0.2 * 0.1 * 0.25) ** (1 / 3), (0.3 * 0.25) ** 0.5]
    assert torch.allclose(out[0], torch.tensor(u, dtype=out.dtype) / sum(u), atol=1e-7)


def test_hinton_rule_by_hand():
    # Each head's dustbin stands for exactly one token, so every head is a full distribution over V and
    # the minimiser of sum_s KL(p_s || q) is their arithmetic mean.
    h1 = _log([0.5, 0.3, 0.2])  # blank, 1, dustbin(=2)
    h2 = _log([0.7, 0.1, 0.2])  # blank, 2, dustbin(=1)
    out = combine_hinton([h1, h2], [[1], [2]], 3, steps=200).exp()
    assert torch.allclose(out[0], torch.tensor([0.6, 0.25, 0.15], dtype=out.dtype), atol=1e-4)
    # A dustbin over two tokens (2, 3) plus a generalist. Head 2 and the generalist both split 2:3 as
    # 3:1, so the optimum keeps that split and, on the classes {0, 1, {2,3}}, is the mean of the three:
    # g (.4, .2, .4), head 1 (.6, .1, .3), head 2 (.5, .3, .2) -> (.5, .2, .3) -> q = (.5, .2, .225, .075).
    g = _log([0.4, 0.2, 0.3, 0.1])
    a = _log([0.6, 0.1, 0.3])  # blank, 1, dustbin(=2,3)
    b = _log([0.5, 0.15, 0.05, 0.3])  # blank, 2, 3, dustbin(=1)
    out = combine_hinton([a, b], [[1], [2, 3]], 4, generalist=g, steps=300)
    assert torch.allclose(out[0].exp(), torch.tensor([0.5, 0.2, 0.225, 0.075], dtype=out.dtype), atol=1e-4)
    # the default few steps land close to that optimum, with a near-zero gradient
    few = combine_hinton([a, b], [[1], [2, 3]], 4, generalist=g)
    assert torch.allclose(few.exp(), out.exp(), atol=5e-3)
    covered = torch.tensor([[0.4 + 0.6 + 0.5, 0.2 + 0.1, 0.3 + 0.15, 0.1 + 0.05]], dtype=out.dtype)
    grad = hinton_gradient(out, covered, torch.tensor([[0.3, 0.3]], dtype=out.dtype),
                           uncovered_matrix([[1], [2, 3]], 4).to(out.dtype), 3)
    assert grad.abs().max() < 1e-4


@pytest.mark.parametrize("shared,combine,generalist", [(True, "average", False), (False, "hinton", True)])
def test_model_contract_and_one_training_step(shared, combine, generalist):
    torch.manual_seed(0)
    subsets = [[1, 2, 3], [3, 4, 5, 6]]
    cfg = {"name": "specialists", "subsets": subsets, "shared_trunk": shared, "combine": combine,
           "generalist": generalist, "trunk": {"name": "cnn", "channels": 16, "num_layers": 1}}
    model = build_model(cfg, 10, 7)
    assert len(model.trunks) == (1 if shared else 2 + generalist)
    feats, lens = torch.randn(3, 37, 10), torch.tensor([37, 30, 9])
    model.eval()
    with torch.inference_mode():  # how the soft-label dumper runs it (Hinton's rule needs no autograd)
        logp, out_lens = model(feats, lens)
    assert logp.shape == (3, output_lengths(37), 7)
    assert out_lens.tolist() == [output_lengths(int(n)) for n in lens]
    assert torch.allclose(logp.exp().sum(-1), torch.ones(3, logp.shape[1]), atol=1e-5)
    heads, g, _ = model(feats, lens, return_heads=True)
    assert [h.shape[-1] for h in heads] == [5, 6] and (g is not None) == generalist
    # the model rebuilds from its config (what a checkpoint stores)
    assert build_model(model.model_cfg, 10, 7).head_sizes == model.head_sizes

    model.train()
    batch = {"features": feats, "feature_lens": lens, "targets": [[1, 4, 2], [6, 6], [3]]}
    objective = SpecialistObjective()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss, stats = objective(model, batch, 0)
    assert {"ctc_head0", "ctc_head1"} <= set(stats) and ("ctc_generalist" in stats) == generalist
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    opt.step()
    assert math.isfinite(loss.item())


def test_model_rejects_bad_subsets():
    with pytest.raises(ValueError, match="resolve"):
        build_model({"name": "specialists", "subsets": "subsets.yaml"}, 10, 7)
    with pytest.raises(ValueError, match="no specialist subset"):
        build_model({"name": "specialists", "subsets": [[1, 2]]}, 10, 7)
    with pytest.raises(ValueError, match="encoder family"):
        build_model({"name": "specialists", "subsets": [[1, 2]], "trunk": {"name": "oracle"}}, 10, 3)


def test_training_asks_the_model_for_its_config_and_objective(tmp_path, monkeypatch):
    """train_from_config: the specialists model resolves its subsets file to ids and brings per-head CTC;
    a plain model keeps its section and trains with CTC (no name is compared)."""
    corpus = synth_corpus(tmp_path, num_train=4, num_dev=2)
    tok = Tokenizer.from_dir(corpus["cfg"]["data"]["lang_dir"])
    letters = [t for t in tok.tokens if t not in ("<blk>",)]
    save_subsets([[tok.token_to_id[t] for t in letters[:4]], [tok.token_to_id[t] for t in letters[3:]]],
                 tmp_path / "subsets.yaml", tok.tokens)
    seen = {}

    class Recorder:
        def __init__(self, cfg, exp_dir, objective):
            seen.update(cfg=cfg, objective=objective)

        def fit(self, resume):
            return None

    monkeypatch.setattr(build, "Trainer", Recorder)
    cfg = dict(corpus["cfg"], model={"name": "specialists", "subsets": str(tmp_path / "subsets.yaml")})
    build.train_from_config(cfg, tmp_path / "exp")
    assert seen["cfg"]["model"]["subsets"] == load_subsets(tmp_path / "subsets.yaml", tok)
    assert isinstance(seen["objective"], SpecialistObjective)
    build.train_from_config(corpus["cfg"], tmp_path / "exp2")
    assert seen["cfg"]["model"] == corpus["cfg"]["model"] and isinstance(seen["objective"], CtcObjective)
