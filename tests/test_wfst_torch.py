"""The batched torch WFST search: exact best paths on hand-made graphs, equality with kaldi-decoder, the CLI.

The hand-made graphs are small enough that every path can be enumerated
(:func:`brute_force`), so with a beam that prunes nothing the search must
find exactly the cheapest path's words and score.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import kaldifst
import pytest
import torch
import yaml

import kdasr.decode.wfst_torch as wt
from kdasr.data.tokenizer import Tokenizer, build_char_lang
from kdasr.decode import make_decoder
from kdasr.decode.graph import GraphError, build_graph, write_symbols
from kdasr.decode.run import check_log_probs
from kdasr.decode.wfst import WfstDecoder
from kdasr.decode.wfst_torch import DecodeMemoryError, TorchWfstDecoder
from synth import LM_TEXTS, batch, decode, make_char_lang, random_peaky, text_cuts

WORDS = ["ONE", "TWO", "THREE", "ON", "THE"]
HAND_WORDS = {"<eps>": 0, "A": 1, "B": 2, "C": 3, "D": 4}
EXACT = {"beam": 1e4, "max_active": 10**6}

# Hand-made TLGs: "src dst ilabel olabel [weight]" (ilabel = token id + 1, 0 = epsilon) and "state [final]".
# Epsilon chains, some with words, from several states; back-off arcs with negative weights (a G's
# back-off weight may exceed 1); several final states with different final weights.
GRAPHS = {
    "eps_chain": """0 1 0 1 0.5
1 2 0 0 0.25
2 3 0 2 -0.75
0 3 2 0 1.0
0 0 1 0
1 1 1 0 0.1
2 2 2 3 0.2
3 3 1 0
3 4 3 4 0.3
4 4 1 0
4 5 0 1 0.2
5 5 2 0
3 1.5
4
5 0.25
""",
    "backoff": """0 0 1 0
0 1 2 1 1.2
0 2 3 2 1.6
0 3 4 3 2.0
1 1 1 0
1 4 3 2 0.3
1 5 0 0 -0.4
2 2 1 0
2 6 4 3 0.2
2 5 0 0 0.7
4 4 1 0
4 6 4 3 0.1
4 2 0 0 -0.2
5 5 1 0
5 1 2 1 1.0
5 2 3 2 1.1
5 3 4 3 1.9
6 6 1 0
6 5 0 0 0.5
3 3 1 0
3 5 0 0 0.0
1 0.6
2 0.9
4 0.1
6
""",
    "no_final_reachable": """0 0 1 0
0 1 2 1 0.5
1 1 2 0
1 2 3 2 0.2
2 2 1 0
2 3 0 3 0.3
3 3 3 0
9 1.0
""",
}


def hand_graph(root: Path, tok: Tokenizer, text: str) -> Path:
    """A graph dir holding a hand-written TLG, its word table and a graph.yaml for ``tok``."""
    root.mkdir(parents=True, exist_ok=True)
    fst = kaldifst.compile(text, keep_state_numbering=True)
    fst.write(str(root / "TLG.fst"))
    write_symbols(root / "words.txt", HAND_WORDS)
    (root / "graph.yaml").write_text(yaml.safe_dump({"lang_hash": tok.hash}))
    return root


def brute_force(text: str, lp: torch.Tensor) -> tuple[list[int], float]:
    """The cheapest path consuming every frame (epsilon arcs anywhere), by enumerating them all.

    Final weights count when a path can end in a final state; otherwise the
    cheapest path ending anywhere wins, as kaldi-decoder's best path does.
    """
    arcs: dict[int, list[tuple[int, int, int, float]]] = {}
    final: dict[int, float] = {}
    for line in text.strip().splitlines():
        p = line.split()
        if len(p) >= 4:
            arcs.setdefault(int(p[0]), []).append((int(p[1]), int(p[2]), int(p[3]), float(p[4]) if len(p) > 4 else 0.0))
        else:
            final[int(p[0])] = float(p[1]) if len(p) > 1 else 0.0
    ends: list[tuple[float, float, list[int]]] = []  # (cost, final cost, words)

    def walk(state: int, t: int, cost: float, words: list[int], eps_depth: int) -> None:
        if t == lp.shape[0]:
            ends.append((cost, final.get(state, math.inf), words))
        for dst, il, ol, w in arcs.get(state, []):
            out = words + [ol] if ol else words
            if il == 0 and eps_depth < 8:
                walk(dst, t, cost + w, out, eps_depth + 1)
            elif il and t < lp.shape[0]:
                walk(dst, t + 1, cost + w - float(lp[t, il - 1]), out, 0)

    walk(0, 0, 0.0, [], 0)
    with_final = [(c + f, w) for c, f, w in ends if math.isfinite(f)]
    best = min(with_final or [(c, w) for c, _, w in ends], key=lambda x: x[0])
    return best[1], -best[0]


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> Tokenizer:
    return make_char_lang(tmp_path_factory.mktemp("lang"))


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_exact_best_path_on_hand_made_graphs(tok, tmp_path, name) -> None:
    graph = hand_graph(tmp_path / name, tok, GRAPHS[name])
    gen = torch.Generator().manual_seed(7)
    # Different lengths in one batch (0 to 6 frames); padding frames are random log-probs.
    items = [torch.randn(n, tok.vocab_size, generator=gen).log_softmax(-1) for n in (6, 1, 4, 0, 5, 3, 2)]
    lp, lens = batch(items)
    dec = TorchWfstDecoder(graph, tok, **EXACT)
    words, scores = dec.search(lp, lens)
    for b, x in enumerate(items):
        if x.shape[0] == 0:
            assert (words[b], scores[b]) == ([], 0.0)
            continue
        want_words, want_score = brute_force(GRAPHS[name], x)
        assert words[b] == want_words, (b, words[b], want_words)
        assert scores[b] == pytest.approx(want_score, abs=1e-4)
    # Each utterance alone (no padding, no neighbours) gives the same answer, as does a shuffled batch.
    for b, x in enumerate(items):
        one = dec.search(*batch([x])) if x.shape[0] else ([[]], [0.0])
        assert one[0][0] == words[b] and one[1][0] == pytest.approx(scores[b], abs=1e-5)
    perm = [4, 0, 6, 2, 1, 5, 3]
    shuffled = dec.search(*batch([items[i] for i in perm]))
    assert shuffled[0] == [words[i] for i in perm]


@pytest.mark.parametrize("acoustic_scale,lm_weight", [(2.0, 0.5), (0.7, 3.0)])
def test_acoustic_scale_and_lm_weight(tok, tmp_path, acoustic_scale, lm_weight) -> None:
    """Score = -(acoustic_scale * -log p + lm_weight * graph cost) of the best path; words come out as text."""
    text = GRAPHS["backoff"]
    graph = hand_graph(tmp_path / "g", tok, text)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(5, tok.vocab_size, generator=gen).log_softmax(-1)
    want_words, want = brute_force(text_scaled(text, lm_weight), x * acoustic_scale)
    dec = TorchWfstDecoder(graph, tok, acoustic_scale=acoustic_scale, lm_weight=lm_weight, **EXACT)
    (words,), (score,) = dec.search(*batch([x]))
    assert words == want_words and score == pytest.approx(want, abs=1e-4)
    inv = {i: w for w, i in HAND_WORDS.items()}
    assert dec.hypotheses(*batch([x])) == [[(" ".join(inv[i] for i in words), pytest.approx(score))]]


def text_scaled(text: str, factor: float) -> str:
    """The AT&T text with every arc and final weight times ``factor``."""
    out = []
    for line in text.strip().splitlines():
        p = line.split()
        n = 4 if len(p) >= 4 else 1
        out.append(" ".join(p[:n] + ([str(float(p[n]) * factor)] if len(p) > n else [])))
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def lm_graph(tmp_path_factory) -> tuple[Tokenizer, Path, Path]:
    lang = tmp_path_factory.mktemp("lang_char")
    tok = make_char_lang(lang)
    return tok, build_graph(lang, LM_TEXTS, order=3), build_graph(lang, LM_TEXTS, uniform=True)


@pytest.mark.parametrize("margin", [4.0, 1.0, 0.3])
def test_equals_kaldi_decoder_on_a_trigram_graph(lm_graph, margin) -> None:
    tok, trigram, uniform = lm_graph
    gen = torch.Generator().manual_seed(11)
    lp, lens = batch([random_peaky(tok, WORDS, n, gen, margin=margin) for n in (1, 2, 3, 4, 5, 6, 3, 2, 7)])
    for graph in (trigram, uniform):
        for opts in ({}, {"lm_weight": 0.6, "acoustic_scale": 1.3, "beam": 6.0}):
            kaldi = WfstDecoder(graph, tok, **opts).hypotheses(lp, lens)
            ours = TorchWfstDecoder(graph, tok, **opts).hypotheses(lp, lens)
            assert [h[0][0] for h in ours] == [h[0][0] for h in kaldi]
            assert [h[0][1] for h in ours] == pytest.approx([h[0][1] for h in kaldi], abs=1e-3)


def test_bad_input_is_refused(lm_graph, tmp_path) -> None:
    tok, graph, _ = lm_graph
    other = build_char_lang(["ONE TWO THREE ON THE X"], tmp_path / "other")
    with pytest.raises(GraphError, match=f"graph {graph} was built for another token set than {tmp_path / 'other'}"):
        TorchWfstDecoder(graph, other)
    with pytest.raises(GraphError, match=f"{tmp_path / 'none'} is not a built graph .* tokens of {tok.lang_dir}"):
        TorchWfstDecoder(tmp_path / "none", tok)
    gen = torch.Generator().manual_seed(0)
    lp, lens = batch([random_peaky(tok, WORDS, n, gen) for n in (2, 3)])
    lp[0, int(lens[0]):] = float("nan")  # NaN in padding is not an error
    TorchWfstDecoder(graph, tok)(lp, lens)
    lp[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="utterance 1 of the batch hold NaN"):
        TorchWfstDecoder(graph, tok)(lp, lens)
    with pytest.raises(ValueError, match="cut b: the model's log-probs are NaN at 1 of its"):
        check_log_probs(["a", "b"], lp, lens)
    with pytest.raises(ValueError, match="1-best only"):
        TorchWfstDecoder(graph, tok, nbest=2)


def test_backend_option(lm_graph) -> None:
    tok, graph, _ = lm_graph
    assert type(make_decoder("wfst", tok, graph_dir=graph, device="cpu")) is WfstDecoder
    dec = make_decoder("wfst", tok, graph_dir=graph, backend="torch", device="cpu", beam=12)
    assert type(dec) is TorchWfstDecoder and dec.beam == 12 and dec.backend == "torch"
    with pytest.raises(ValueError, match="unknown WFST backend 'k2'; the backends are: kaldi, torch"):
        make_decoder("wfst", tok, graph_dir=graph, backend="k2")
    with pytest.raises(ValueError, match="takes no option 'num_jobs'"):
        make_decoder("wfst", tok, graph_dir=graph, backend="torch", num_jobs=2)
    with pytest.raises(ValueError, match="backend= is a wfst option"):
        make_decoder("greedy", tok, backend="torch")


def test_out_of_memory_splits_the_batch(lm_graph, monkeypatch) -> None:
    tok, graph, _ = lm_graph
    gen = torch.Generator().manual_seed(4)
    lp, lens = batch([random_peaky(tok, WORDS, n, gen, margin=1.0) for n in (3, 1, 4, 2, 5)])
    dec = TorchWfstDecoder(graph, tok)
    whole = dec.hypotheses(lp, lens)
    search = dec.search
    sizes = []

    def small_device(lp: torch.Tensor, lens: torch.Tensor):
        sizes.append(len(lens))
        if len(lens) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.50 GiB (GPU 0; 80 GiB total)")
        return search(lp, lens)

    monkeypatch.setattr(dec, "search", small_device)
    assert dec.hypotheses(lp, lens) == whole
    assert sizes == [5, 3, 2, 1, 2]
    monkeypatch.setattr(dec, "search", lambda lp, lens: (_ for _ in ()).throw(
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.50 GiB")))
    message = r"one utterance of 3 frames ran out of memory on cpu \(asked for 2.50 GiB\)"
    with pytest.raises(DecodeMemoryError, match=message):
        dec.hypotheses(lp[:1, :3], lens[:1].clamp(max=3))


def test_cli_backend_torch_equals_kaldi(decode_setup, network_output, tmp_path) -> None:
    tok = decode_setup["tok"]
    gen = torch.Generator().manual_seed(5)
    texts = {}
    for i, n in enumerate((3, 1, 4, 2, 5, 2, 3)):
        network_output[f"utt-{i}"] = random_peaky(tok, WORDS, n, gen, margin=1.0)
        texts[f"utt-{i}"] = "ONE TWO"
    cuts = text_cuts(tmp_path / "cuts_test.jsonl.gz", texts)
    graph = ["--method", "wfst", "--opt", f"graph_dir={decode_setup['graph']}"]
    kaldi = decode(decode_setup, tmp_path / "kaldi", cuts, *graph)
    torch_cpu = decode(decode_setup, tmp_path / "torch", cuts, *graph, "--opt", "backend=torch")
    assert (kaldi["wfst_backend"], torch_cpu["wfst_backend"]) == ("kaldi", "torch")
    assert ((tmp_path / "torch" / "recogs-test-wfst.txt").read_text()
            == (tmp_path / "kaldi" / "recogs-test-wfst.txt").read_text())


def test_graph_arrays_equal_kaldifst(lm_graph) -> None:
    _, graph, _ = lm_graph
    fst = kaldifst.StdVectorFst.read(str(graph / "TLG.fst"))
    a = wt.read_fst_arrays(graph / "TLG.fst")
    arcs = [(s, x.ilabel, x.olabel, x.nextstate, x.weight.value) for s in range(fst.num_states)
            for x in kaldifst.ArcIterator(fst, s)]
    assert list(zip(a["src"].tolist(), a["ilabel"].tolist(), a["olabel"].tolist(), a["dst"].tolist(),
                    a["weight"].tolist())) == pytest.approx(arcs)
    assert a["final"].tolist() == [fst.final(s).value for s in range(fst.num_states)]
    assert int(a["start"]) == fst.start



@pytest.mark.parametrize("margin", [4.0, 0.3])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_search_equals_cpu(lm_graph, margin) -> None:
    tok, graph, _ = lm_graph
    gen = torch.Generator().manual_seed(12)
    lp, lens = batch([random_peaky(tok, WORDS, n, gen, margin=margin) for n in itertools.chain(range(1, 8), [40])])
    cpu = TorchWfstDecoder(graph, tok).hypotheses(lp, lens)
    cuda = make_decoder("wfst", tok, graph_dir=graph, device="cuda")
    assert type(cuda) is TorchWfstDecoder
    out = cuda.hypotheses(lp.cuda(), lens.cuda())
    assert [h[0][0] for h in out] == [h[0][0] for h in cpu]
    assert [h[0][1] for h in out] == pytest.approx([h[0][1] for h in cpu], abs=1e-3)
