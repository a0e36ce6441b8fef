"""Token sets: round trips, file format, clear errors for what cannot be spelled, hash, CLI."""
from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from click.testing import CliRunner
from lhotse import CutSet, MonoCut, SupervisionSegment

from kdasr.cli.main import cli
from kdasr.data.tokenizer import (
    BLANK,
    LangError,
    Tokenizer,
    UnknownTokenError,
    build_bpe_lang,
    build_char_lang,
    build_lang,
    build_phone_lang,
    read_tokens,
    texts_from_cuts,
)

TEXTS = {
    "utt-a": "the cat sat on the mat",
    "utt-b": "a dog ran to the cat",
    "utt-c": "hello world the end",
    "utt-d": "on and on the band played",
}
LEXICON = """\
THE DH AH
THE DH IY
CAT K AE T
SAT S AE T
ON AA N
MAT M AE T
A AH
DOG D AO G
"""


def _upper(texts: dict[str, str]) -> dict[str, str]:
    return {k: v.upper() for k, v in texts.items()}


def _tokens_file_ok(lang_dir: Path, tok: Tokenizer) -> None:
    lines = (lang_dir / "tokens.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == f"{BLANK} 0"
    assert [ln.split() for ln in lines] == [[t, str(i)] for i, t in enumerate(tok.tokens)]
    assert tok.blank_id == 0 and tok.tokens[0] == BLANK and tok.vocab_size == len(lines)
    assert all(tok.token_to_id[t] == i for i, t in enumerate(tok.tokens))


def test_char_round_trip_and_format(tmp_path: Path) -> None:
    tok = build_char_lang(TEXTS, tmp_path / "lang_char")
    assert tok.kind == "char" and Tokenizer.from_dir(tmp_path / "lang_char").tokens == tok.tokens
    _tokens_file_ok(tmp_path / "lang_char", tok)
    for text in TEXTS.values():
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert 0 not in ids
    ids = tok.encode("the cat")
    assert [tok.tokens[i] for i in ids] == list("the") + ["▁"] + list("cat")
    # Blanks and stray separators from a model's output do not leak into the text.
    sep = tok.token_to_id["▁"]
    assert tok.decode([sep, 0] + ids + [0, sep, sep]) == "the cat"
    assert tok.lexicon_entry("cat") == ["c", "a", "t"]


def test_char_unknown_characters_named(tmp_path: Path) -> None:
    tok = build_char_lang(TEXTS, tmp_path / "lang")
    with pytest.raises(UnknownTokenError) as e:
        tok.encode("the qux zebra")
    assert {"q", "x", "z"} <= set(e.value.unknown)
    assert "'q'" in str(e.value) and "'z'" in str(e.value)
    with pytest.raises(UnknownTokenError, match="'q'"):
        tok.lexicon_entry("quiet")


def test_char_rejects_separator_in_text(tmp_path: Path) -> None:
    with pytest.raises(LangError, match="utt-x"):
        build_char_lang({"utt-x": "bad▁text"}, tmp_path / "lang")


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_bpe_round_trip(tmp_path: Path, model_type: str) -> None:
    tok = build_bpe_lang(TEXTS, tmp_path / "lang_bpe", vocab_size=24, model_type=model_type)
    _tokens_file_ok(tmp_path / "lang_bpe", tok)
    assert tok.kind == "bpe" and tok.vocab_size == 24 and tok.tokens[:2] == ["<blk>", "<unk>"]
    assert (tmp_path / "lang_bpe" / "bpe.model").is_file()
    for text in TEXTS.values():
        ids = tok.encode(text)
        assert 0 not in ids and tok.decode(ids) == text
    assert "".join(tok.lexicon_entry("cat")).replace("▁", "") == "cat"
    # Data loader workers receive the tokenizer by pickling.
    assert pickle.loads(pickle.dumps(tok)).encode("the cat") == tok.encode("the cat")


def test_bpe_vocab_too_large_is_explained(tmp_path: Path) -> None:
    with pytest.raises(LangError, match=r"vocab size 5000 is too large.*at most \d+"):
        build_bpe_lang(TEXTS, tmp_path / "lang", vocab_size=5000)
    with pytest.raises(LangError, match="too small"):
        build_bpe_lang(TEXTS, tmp_path / "lang", vocab_size=5)
    assert not (tmp_path / "lang").exists()  # nothing half-built is left behind


def test_phone_round_trip_first_pronunciation(tmp_path: Path) -> None:
    lex = tmp_path / "lexicon.txt"
    lex.write_text(LEXICON)
    texts = {"u1": "THE CAT SAT ON THE MAT", "u2": "A DOG"}
    tok = build_phone_lang(texts, lex, tmp_path / "lang_phone")
    _tokens_file_ok(tmp_path / "lang_phone", tok)
    assert tok.kind == "phone"
    assert tok.lexicon_entry("THE") == ["DH", "AH"]  # the first of two pronunciations
    assert "THE DH IY" not in (tmp_path / "lang_phone" / "lexicon.txt").read_text()
    # Phones carry no word boundary: decode gives the phone string (scored as a PER).
    assert tok.decode(tok.encode("THE CAT")) == "DH AH K AE T"
    phones_of = {"THE": "DH AH", "CAT": "K AE T", "SAT": "S AE T", "ON": "AA N", "MAT": "M AE T", "A": "AH",
                 "DOG": "D AO G"}
    for text in texts.values():
        assert tok.decode(tok.encode(text)) == " ".join(phones_of[w] for w in text.split())
    with pytest.raises(UnknownTokenError, match="'BIRD'"):
        tok.encode("THE BIRD")


def test_phone_missing_words_name_utterances(tmp_path: Path) -> None:
    lex = tmp_path / "lexicon.txt"
    lex.write_text(LEXICON)
    texts = {"u1": "THE CAT", "u2": "THE BIRD SANG", "u3": "A BIRD"}
    with pytest.raises(UnknownTokenError) as e:
        build_phone_lang(texts, lex, tmp_path / "lang")
    assert e.value.unknown == {"BIRD": ["u2", "u3"], "SANG": ["u2"]}
    msg = str(e.value)
    assert "'BIRD' (in u2, u3)" in msg and "'SANG' (in u2)" in msg and str(lex) in msg
    assert not (tmp_path / "lang").exists()


def test_hash_changes_with_tokens(tmp_path: Path) -> None:
    a = build_char_lang(TEXTS, tmp_path / "a")
    same = build_char_lang(dict(TEXTS), tmp_path / "b")
    other = build_char_lang({**TEXTS, "utt-e": "zebra quiz"}, tmp_path / "c")
    assert len(a.hash) == 64 and a.hash == same.hash and a.hash != other.hash
    lines = (tmp_path / "b" / "tokens.txt").read_text().splitlines()
    lines[1], lines[2] = lines[1].split()[0] + " 2", lines[2].split()[0] + " 1"
    (tmp_path / "b" / "tokens.txt").write_text("\n".join(lines) + "\n")
    assert Tokenizer.from_dir(tmp_path / "b").hash != a.hash


def test_bad_lang_dirs(tmp_path: Path) -> None:
    with pytest.raises(LangError, match="lang.yaml does not exist"):
        Tokenizer.from_dir(tmp_path / "nothing")
    build_char_lang(TEXTS, tmp_path / "lang")
    (tmp_path / "lang" / "tokens.txt").write_text("a 0\n<blk> 1\n")
    with pytest.raises(LangError, match="id 0 must be <blk>"):
        read_tokens(tmp_path / "lang" / "tokens.txt")


def test_build_lang_keeps_or_refuses_existing(tmp_path: Path) -> None:
    first = build_lang("bpe", TEXTS, tmp_path / "lang", vocab_size=24)
    mtime = (tmp_path / "lang" / "bpe.model").stat().st_mtime_ns
    again = build_lang("bpe", TEXTS, tmp_path / "lang", vocab_size=24)
    assert again.hash == first.hash and (tmp_path / "lang" / "bpe.model").stat().st_mtime_ns == mtime
    with pytest.raises(LangError, match="already holds another token set"):
        build_lang("bpe", TEXTS, tmp_path / "lang", vocab_size=25)
    assert build_lang("bpe", TEXTS, tmp_path / "lang", vocab_size=25, overwrite=True).vocab_size == 25


def _cuts_file(path: Path, texts: dict[str, str]) -> Path:
    cuts = [
        MonoCut(id=k, start=0, duration=1.0, channel=0,
                supervisions=[SupervisionSegment(id=k, recording_id=k, start=0, duration=1.0, text=v)])
        for k, v in texts.items()
    ]
    cuts.append(MonoCut(id="silent", start=0, duration=1.0, channel=0,
                        supervisions=[SupervisionSegment(id="silent", recording_id="s", start=0, duration=1.0)]))
    CutSet.from_cuts(cuts).to_file(path)
    return path


def test_texts_from_cuts_skips_untranscribed(tmp_path: Path) -> None:
    path = _cuts_file(tmp_path / "cuts.jsonl.gz", TEXTS)
    assert texts_from_cuts(path) == list(TEXTS.items())


def test_cli_tokens(tmp_path: Path) -> None:
    cuts = _cuts_file(tmp_path / "cuts_train.jsonl.gz", _upper(TEXTS))
    runner = CliRunner()
    r = runner.invoke(cli, ["prepare", "tokens", "--kind", "char", "--cuts", str(cuts),
                            "--lang-dir", str(tmp_path / "lang_char")])
    assert r.exit_code == 0, r.output
    assert Tokenizer.from_dir(tmp_path / "lang_char").decode(
        Tokenizer.from_dir(tmp_path / "lang_char").encode("THE CAT")) == "THE CAT"
    assert (tmp_path / "lang_char" / "log" / "tokens.log").is_file()

    r = runner.invoke(cli, ["prepare", "tokens", "--kind", "bpe", "--cuts", str(cuts),
                            "--lang-dir", str(tmp_path / "lang_bpe"), "--vocab-size", "100000"])
    assert r.exit_code == 1 and "too large" in r.output and "Traceback" not in r.output
    r = runner.invoke(cli, ["prepare", "tokens", "--kind", "bpe", "--cuts", str(cuts),
                            "--lang-dir", str(tmp_path / "lang_bpe")])
    assert r.exit_code == 2 and "--vocab-size" in r.output

    lex = tmp_path / "lexicon.txt"
    lex.write_text(LEXICON)
    r = runner.invoke(cli, ["prepare", "tokens", "--kind", "phone", "--cuts", str(cuts),
                            "--lang-dir", str(tmp_path / "lang_phone"), "--lexicon", str(lex)])
    assert r.exit_code == 1 and "'HELLO' (in utt-c)" in r.output
