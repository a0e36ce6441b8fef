"""WFST decoding with kaldi_decoder over TLG graphs, the decoder factory and the LM-weight scan."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdasr.ctc import collapse
from kdasr.data.tokenizer import Tokenizer, build_char_lang
from kdasr.decode import make_decoder, scan_lm_weights
from kdasr.decode.graph import GraphError, build_graph
from kdasr.decode.wfst import WfstDecoder
from synth import GRAPH_WORDS, LM_TEXTS, ambiguous, batch, frames_for, posteriors, random_peaky

WORDS = GRAPH_WORDS


@pytest.fixture(scope="module")
def graphs(char_graph) -> tuple[Tokenizer, Path, Path]:
    """The 3-gram graph and a uniform-LM graph over the same token set."""
    tok, graph_dir = char_graph
    return tok, graph_dir, build_graph(graph_dir.parent, LM_TEXTS, uniform=True)


def test_decodes_known_best_path_and_empty_input(graphs) -> None:
    tok, graph_dir, _ = graphs
    dec = WfstDecoder(graph_dir, tok)
    one_two = posteriors(frames_for(tok, "ONE TWO"), tok.vocab_size)
    blanks = posteriors([0] * 12, tok.vocab_size)
    lp, lens = batch([one_two, blanks, one_two[:0]])
    assert dec(lp, lens) == ["ONE TWO", "", ""]


def test_lm_overrules_weak_acoustic_preference(graphs) -> None:
    tok, graph_dir, uniform = graphs
    # Acoustics lean to 'ON TWO' and 'ONE THE'; the LM text says 'ONE TWO' and 'ON THE'.
    lp, lens = batch([ambiguous(tok, 0.4, "TWO"), ambiguous(tok, 0.6, "THE")])
    assert WfstDecoder(graph_dir, tok)(lp, lens) == ["ONE TWO", "ON THE"]
    assert WfstDecoder(uniform, tok)(lp, lens) == ["ON TWO", "ONE THE"]
    assert WfstDecoder(graph_dir, tok, lm_weight=0.01)(lp, lens) == ["ON TWO", "ONE THE"]


def test_uniform_grammar_matches_greedy_on_peaky_posteriors(graphs) -> None:
    tok, _, uniform = graphs
    gen = torch.Generator().manual_seed(0)
    items = [random_peaky(tok, WORDS, n, gen) for n in (1, 2, 3, 4, 5, 6, 3, 2)]
    lp, lens = batch(items)
    greedy = [tok.decode(collapse(x.argmax(-1).tolist(), 0)) for x in items]
    assert all(set(g.split()) <= set(WORDS) for g in greedy)
    assert WfstDecoder(uniform, tok, beam=50.0, max_active=100000)(lp, lens) == greedy


def test_nbest_is_distinct_and_sorted(graphs) -> None:
    tok, graph_dir, _ = graphs
    lp, lens = batch([ambiguous(tok, 0.5, "TWO")])
    dec = WfstDecoder(graph_dir, tok, nbest=3)
    hyps = dec.hypotheses(lp, lens)[0]
    texts = [h for h, _ in hyps]
    assert texts[0] == "ONE TWO" and "ON TWO" in texts and len(set(texts)) == len(texts)
    assert [s for _, s in hyps] == sorted((s for _, s in hyps), reverse=True)
    assert dec(lp, lens) == ["ONE TWO"]


def test_worker_processes_give_the_same_result(graphs) -> None:
    tok, graph_dir, _ = graphs
    gen = torch.Generator().manual_seed(1)
    lp, lens = batch([random_peaky(tok, WORDS, n, gen, margin=1.0) for n in (3, 1, 4, 2, 5)])
    one = WfstDecoder(graph_dir, tok)(lp, lens)
    two = WfstDecoder(graph_dir, tok, num_jobs=2)
    try:
        assert two(lp, lens) == one
    finally:
        two.close()


def test_graph_of_another_token_set_is_refused(graphs, tmp_path) -> None:
    _, graph_dir, _ = graphs
    other = build_char_lang(["ONE TWO THREE ON THE X"], tmp_path / "other")
    with pytest.raises(GraphError, match="another token set"):
        WfstDecoder(graph_dir, other)


def test_factory(graphs) -> None:
    tok, graph_dir, _ = graphs
    with pytest.raises(ValueError, match="greedy, beam, wfst"):
        make_decoder("viterbi", tok)
    with pytest.raises(ValueError, match="no option 'beem'.*beam"):
        make_decoder("wfst", tok, graph_dir=graph_dir, beem=3)
    with pytest.raises(ValueError, match="graph_dir"):
        make_decoder("wfst", tok)
    dec = make_decoder("wfst", tok, graph_dir=str(graph_dir), beam=20, device=torch.device("cpu"))
    lp, lens = batch([posteriors(frames_for(tok, "THE ONE"), tok.vocab_size)])
    assert dec(lp, lens) == ["THE ONE"]


def test_factory_greedy(graphs) -> None:
    tok, _, _ = graphs
    gen = torch.Generator().manual_seed(2)
    items = [random_peaky(tok, WORDS, n, gen) for n in (2, 3)]
    lp, lens = batch(items)
    expected = [tok.decode(collapse(x.argmax(-1).tolist(), 0)) for x in items]
    assert make_decoder("greedy", tok, device="cpu")(lp, lens) == expected


def test_scan_lm_weights(graphs) -> None:
    tok, graph_dir, _ = graphs
    batches = [batch([ambiguous(tok, 0.4, "TWO")]), batch([ambiguous(tok, 0.6, "THE")])]
    best, table = scan_lm_weights(lambda w: WfstDecoder(graph_dir, tok, lm_weight=w), batches,
                                  ["ONE TWO", "ON THE"], [0.01, 1.0])
    assert best == 1.0
    assert [row["wer"] for row in table] == [50.0, 0.0] and table[0]["ref_words"] == 4
