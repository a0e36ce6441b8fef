"""CTC beam search: flashlight (CPU, lexicon-free / lexicon / lexicon + KenLM) and the CUDA decoder."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdasr.ctc import collapse
from kdasr.data.tokenizer import Tokenizer, build_bpe_lang
from kdasr.decode import make_decoder
from kdasr.decode.beam import CtcBeamDecoder
from kdasr.decode.graph import build_graph
from synth import GRAPH_WORDS, ambiguous, batch, frames_for, posteriors, random_peaky

pytest.importorskip("flashlight.lib.text.decoder")

WORDS = GRAPH_WORDS


@pytest.fixture(scope="module")
def graph(char_graph) -> tuple[Tokenizer, Path]:
    return char_graph


def test_lexicon_free_matches_greedy_on_peaky_posteriors(graph) -> None:
    tok, _ = graph
    gen = torch.Generator().manual_seed(0)
    items = [random_peaky(tok, WORDS, n, gen) for n in (1, 3, 5, 2)]
    lp, lens = batch(items)
    greedy = [tok.decode(collapse(x.argmax(-1).tolist(), 0)) for x in items]
    assert CtcBeamDecoder(tok)(lp, lens) == greedy


def test_lexicon_and_lm(graph) -> None:
    tok, graph_dir = graph
    lp, lens = batch([ambiguous(tok, 0.4, "TWO"), ambiguous(tok, 0.6, "THE")])
    assert CtcBeamDecoder(tok, graph_dir=graph_dir)(lp, lens) == ["ONE TWO", "ON THE"]
    assert CtcBeamDecoder(tok, lm=graph_dir / "G.arpa")(lp, lens) == ["ONE TWO", "ON THE"]  # lexicon from the ARPA
    assert CtcBeamDecoder(tok, graph_dir=graph_dir, lm=False)(lp, lens) == ["ON TWO", "ONE THE"]
    assert CtcBeamDecoder(tok)(lp, lens) == ["ON TWO", "ONE THE"]


def test_lexicon_restricts_words_and_word_final_repeats_are_free(graph) -> None:
    tok, graph_dir = graph
    t = tok.token_to_id
    not_a_word = posteriors([0, t["T"], 0, {t["W"]: 0.6, t["H"]: 0.4}, 0, t["E"], 0], tok.vocab_size)
    lp, lens = batch([not_a_word])
    assert CtcBeamDecoder(tok)(lp, lens) == ["TWE"]
    assert CtcBeamDecoder(tok, graph_dir=graph_dir, lm=False)(lp, lens) == ["THE"]
    # A word-final token held over several frames costs nothing extra with a lexicon.
    held = posteriors([0, t["T"], t["W"], t["O"], t["O"], t["O"]], tok.vocab_size)
    lp, lens = batch([held])
    free = CtcBeamDecoder(tok).hypotheses(lp, lens)[0][0]
    lexicon = CtcBeamDecoder(tok, graph_dir=graph_dir, lm=False).hypotheses(lp, lens)[0][0]
    assert free[0] == lexicon[0] == "TWO"
    assert lexicon[1] == pytest.approx(free[1], abs=1e-3)


def test_empty_hypotheses(graph) -> None:
    tok, graph_dir = graph
    blanks = posteriors([0] * 9, tok.vocab_size)
    lp, lens = batch([blanks, blanks[:0]])
    for dec in (CtcBeamDecoder(tok), CtcBeamDecoder(tok, graph_dir=graph_dir)):
        assert dec(lp, lens) == ["", ""]


def test_nbest(graph) -> None:
    tok, graph_dir = graph
    lp, lens = batch([ambiguous(tok, 0.5, "TWO")])
    hyps = CtcBeamDecoder(tok, graph_dir=graph_dir, nbest=3).hypotheses(lp, lens)[0]
    assert hyps[0][0] == "ONE TWO" and len(hyps) > 1
    assert [s for _, s in hyps] == sorted((s for _, s in hyps), reverse=True)


def test_bpe_lexicon_search(tmp_path) -> None:
    texts = ["ONE TWO THREE", "TWO THREE ONE", "THREE ONE TWO", "ON THE ONE", "THE TWO"] * 4
    tok = build_bpe_lang(texts, tmp_path / "lang", vocab_size=14)
    graph_dir = build_graph(tmp_path / "lang", texts, order=2)
    frames = []
    for i in tok.encode("THE TWO ONE"):
        frames += [0, i]
    lp, lens = batch([posteriors(frames, tok.vocab_size)])
    assert CtcBeamDecoder(tok, graph_dir=graph_dir)(lp, lens) == ["THE TWO ONE"]
    assert make_decoder("beam", tok, device="cpu")(lp, lens) == ["THE TWO ONE"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_cuda_without_gpu_is_a_clear_error(graph) -> None:
    tok, graph_dir = graph
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        CtcBeamDecoder(tok, device="cuda")
    # With a lexicon the search is flashlight's on the CPU whatever the device.
    lp, lens = batch([posteriors(frames_for(tok, "ONE"), tok.vocab_size)])
    assert CtcBeamDecoder(tok, graph_dir=graph_dir, device="cuda")(lp, lens) == ["ONE"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_decoder_matches_cpu(graph) -> None:
    tok, _ = graph
    gen = torch.Generator().manual_seed(3)
    items = [random_peaky(tok, WORDS, n, gen) for n in (2, 4, 1)]
    lp, lens = batch(items)
    cpu = CtcBeamDecoder(tok)(lp, lens)
    gpu = CtcBeamDecoder(tok, device="cuda", beam_size=10)
    assert gpu.use_cuda
    assert gpu(lp.cuda(), lens.cuda()) == cpu


def test_bpe_word_final_piece_held_over_frames_is_one_word(tmp_path) -> None:
    """A CTC repeat without blank is one token, also at a word's end (flashlight alone would emit the word twice)."""
    texts = ["ONE TWO THREE", "TWO THREE ONE", "THREE ONE TWO", "ONE ONE TWO", "TWO TWO"] * 4
    tok = build_bpe_lang(texts, tmp_path / "lang", vocab_size=13)
    graph_dir = build_graph(tmp_path / "lang", texts, order=2)

    def frames(text: str, hold: int, gap: list[int]) -> list[int]:
        out: list[int] = []
        for word in text.split():
            for i in tok.encode(word):
                out += [i] * hold
            out += gap
        return out

    held = frames("TWO ONE", hold=3, gap=[0])  # every piece held for three frames, a blank after each word
    abutting = frames("ONE TWO THREE", hold=1, gap=[])  # no blank at all, not even between words
    double = frames("TWO TWO", hold=2, gap=[0])  # a blank separates the two TWOs
    lp, lens = batch([posteriors(f, tok.vocab_size) for f in (held, abutting, double)])
    for lm in (False, True):
        assert CtcBeamDecoder(tok, graph_dir=graph_dir, lm=lm)(lp, lens) == ["TWO ONE", "ONE TWO THREE", "TWO TWO"]
