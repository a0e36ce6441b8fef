"""TLG construction: topology, lexicon, LM, OOV handling, caching, CLI."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import kaldifst
import pytest

from kdasr.data.tokenizer import build_bpe_lang, build_phone_lang
from kdasr.decode.graph import (
    GraphError,
    add_disambig,
    arpa_words,
    build_graph,
    build_T,
    load_graph_info,
    read_symbols,
    train_arpa,
)
from synth import GRAPH_WORDS, LM_TEXTS, frames_for, make_char_lang


def words_of_token_path(tlg: kaldifst.StdVectorFst, ids: Sequence[int], words: dict[int, str]) -> Optional[list[str]]:
    """Words TLG assigns to a frame-level token path (None if TLG rejects it)."""
    acceptor = kaldifst.make_linear_acceptor([i + 1 for i in ids])  # TLG input = token id + 1
    composed = kaldifst.compose(acceptor, tlg)
    if composed.num_states == 0:
        return None
    ok, _, out, _ = kaldifst.get_linear_symbol_sequence(kaldifst.shortest_path(composed))
    assert ok
    return [words[o] for o in out]


def _load(graph_dir: Path) -> tuple[kaldifst.StdVectorFst, dict[int, str]]:
    tlg = kaldifst.StdVectorFst.read(str(graph_dir / "TLG.fst"))
    return tlg, {i: w for w, i in read_symbols(graph_dir / "words.txt").items()}


def test_ctc_topology_collapses_repeats_and_needs_blank_between_doubles() -> None:
    T = build_T(4)
    kaldifst.arcsort(T, sort_type="ilabel")

    def out(ids: list[int]) -> Optional[list[int]]:
        c = kaldifst.compose(kaldifst.make_linear_acceptor([i + 1 for i in ids]), T)
        if c.num_states == 0:
            return None
        return kaldifst.get_linear_symbol_sequence(kaldifst.shortest_path(c))[2]

    assert out([2, 2, 2]) == [2]
    assert out([2, 0, 2]) == [2, 2]
    assert out([0, 1, 1, 3, 0, 0]) == [1, 3]
    assert out([0, 0]) == []


def test_tlg_accepts_spellings_and_rejects_others(char_graph) -> None:
    tok, graph_dir = char_graph
    tlg, words = _load(graph_dir)
    assert words_of_token_path(tlg, frames_for(tok, "ONE TWO"), words) == ["ONE", "TWO"]
    assert words_of_token_path(tlg, frames_for(tok, "THE ONE ON", hold=1), words) == ["THE", "ONE", "ON"]
    # A word-final repeat and a trailing separator are fine; blanks alone are the empty sentence.
    assert words_of_token_path(tlg, frames_for(tok, "TWO") + [1, 1], words) == ["TWO"]
    assert words_of_token_path(tlg, [0, 0, 0], words) == []
    # Not lexicon words, or words without the separator between them: rejected.
    assert words_of_token_path(tlg, frames_for(tok, "TWE"), words) is None
    assert words_of_token_path(tlg, frames_for(tok, "ONE")[:-1] + frames_for(tok, "TWO"), words) is None
    # "THREE" needs a blank between its two E's: held E frames collapse to one E.
    e = tok.token_to_id["E"]
    path = [tok.token_to_id[c] for c in "THRE"] + [e]
    assert words_of_token_path(tlg, path, words) is None
    assert words_of_token_path(tlg, path[:-1] + [0, e], words) == ["THREE"]


def test_oov_words_are_dropped_and_become_unk_in_the_lm(tmp_path, caplog) -> None:
    tok = make_char_lang(tmp_path / "lang")
    with caplog.at_level(logging.WARNING):
        graph_dir = build_graph(tmp_path / "lang", LM_TEXTS, order=2)
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "'FOUR'" in warning and "'ZEBRA'" in warning
    info = load_graph_info(graph_dir)
    assert info["dropped_words"] == 2 and sorted(info["dropped_examples"]) == ["FOUR", "ZEBRA"]
    table = read_symbols(graph_dir / "words.txt")
    assert set(GRAPH_WORDS) <= set(table) and not {"FOUR", "ZEBRA"} & set(table)
    assert table["<eps>"] == 0 and {"#0", "<s>", "</s>", "<unk>"} <= set(table)
    assert "<unk>" in arpa_words(graph_dir / "G.arpa")
    lexicon = (graph_dir / "lexicon.txt").read_text().splitlines()
    assert "ONE O N E" in lexicon and len(lexicon) == len(GRAPH_WORDS)
    assert (graph_dir / "tokens.txt").read_text() == (tmp_path / "lang" / "tokens.txt").read_text()
    assert tok.hash == info["lang_hash"]


def test_cache_hit_and_new_graph_for_new_inputs(tmp_path) -> None:
    make_char_lang(tmp_path / "lang")
    first = build_graph(tmp_path / "lang", LM_TEXTS, order=2)
    stamp = (first / "TLG.fst").stat().st_mtime_ns
    again = build_graph(tmp_path / "lang", list(LM_TEXTS), order=2)
    assert again == first and (first / "TLG.fst").stat().st_mtime_ns == stamp
    assert build_graph(tmp_path / "lang", LM_TEXTS, order=3) != first
    assert build_graph(tmp_path / "lang", LM_TEXTS, uniform=True) != first
    assert build_graph(tmp_path / "lang", LM_TEXTS[:-1], order=2) != first
    assert not [p for p in (tmp_path / "lang").iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_arpa_and_uniform_graphs(tmp_path) -> None:
    tok = make_char_lang(tmp_path / "lang")
    arpa = train_arpa(["ONE TWO", "TWO THREE", "THE WOE"], tmp_path / "lm.arpa", order=2)
    graph_dir = build_graph(tmp_path / "lang", None, arpa=arpa)
    tlg, words = _load(graph_dir)
    assert words_of_token_path(tlg, frames_for(tok, "TWO THREE"), words) == ["TWO", "THREE"]
    assert words_of_token_path(tlg, frames_for(tok, "THE WOE"), words) == ["THE", "WOE"]
    assert words_of_token_path(tlg, frames_for(tok, "ON"), words) is None  # not in this LM
    uniform = build_graph(tmp_path / "lang", ["ONE TWO", "ON"], uniform=True)
    assert not (uniform / "G.arpa").exists()
    tlg, words = _load(uniform)
    assert words_of_token_path(tlg, frames_for(tok, "TWO ON ON ONE"), words) == ["TWO", "ON", "ON", "ONE"]
    with pytest.raises(GraphError):
        build_graph(tmp_path / "lang", ["ONE"], arpa=arpa, uniform=True)
    with pytest.raises(GraphError, match="cannot be spelled|none of"):
        build_graph(tmp_path / "lang", ["ZEBRA FOUR"], uniform=True)


def test_disambiguation_of_homophones_and_prefixes() -> None:
    lex, top = add_disambig([("ON", ["O", "N"]), ("ONE", ["O", "N", "E"]), ("RED", ["r", "e", "d"]),
                             ("READ", ["r", "e", "d"]), ("X", ["x"])])
    assert dict(lex) == {"ON": ["O", "N", "#1"], "ONE": ["O", "N", "E"], "RED": ["r", "e", "d", "#1"],
                         "READ": ["r", "e", "d", "#2"], "X": ["x"]}
    assert top == 2


def test_phone_graph_with_homophones(tmp_path) -> None:
    lexicon = tmp_path / "lexicon.txt"
    lexicon.write_text("RED r eh d\nREAD r eh d\nA ah\nBED b eh d\nBE b iy\n")
    tok = build_phone_lang(["RED A BED"], lexicon, tmp_path / "lang")
    graph_dir = build_graph(tmp_path / "lang", ["RED A BED", "READ A BE", "A RED BED"], order=2)
    assert load_graph_info(graph_dir)["disambig_symbols"] == 3  # #0, #1, #2
    tlg, words = _load(graph_dir)
    ph = tok.token_to_id
    path = [ph[p] for p in "ah b eh d".split()]
    assert words_of_token_path(tlg, path, words) == ["A", "BED"]
    got = words_of_token_path(tlg, [ph[p] for p in "r eh d ah".split()], words)
    assert got in (["RED", "A"], ["READ", "A"])


def test_bpe_graph(tmp_path) -> None:
    texts = ["ONE TWO THREE", "TWO THREE ONE", "THREE ONE TWO", "ON THE ONE", "THE TWO"] * 4
    tok = build_bpe_lang(texts, tmp_path / "lang", vocab_size=14)
    graph_dir = build_graph(tmp_path / "lang", texts, order=2)
    tlg, words = _load(graph_dir)
    ids = tok.encode("THE TWO ONE")
    assert words_of_token_path(tlg, ids, words) == ["THE", "TWO", "ONE"]
    assert words_of_token_path(tlg, ids[:-1], words) != ["THE", "TWO", "ONE"]


def test_cli_graph(tmp_path) -> None:
    from click.testing import CliRunner

    from kdasr.cli.main import cli

    make_char_lang(tmp_path / "lang")
    text = tmp_path / "lm.txt"
    text.write_text("\n".join(LM_TEXTS) + "\n")
    runner = CliRunner()
    res = runner.invoke(cli, ["graph", "--lang-dir", str(tmp_path / "lang"), "--lm-text", str(text), "--order", "2"])
    assert res.exit_code == 0, res.output
    graph_dir = Path(res.output.strip().splitlines()[-1])
    assert (graph_dir / "TLG.fst").is_file() and graph_dir.parent == tmp_path / "lang"
    assert graph_dir == build_graph(tmp_path / "lang", text, order=2)  # a path reads the same text
    res = runner.invoke(cli, ["graph", "--lang-dir", str(tmp_path / "lang")])
    assert res.exit_code != 0 and "--lm-text or --arpa" in res.output
