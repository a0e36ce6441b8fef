"""WER scoring: counts, icefall/Kaldi file formats, edge cases, ``kdasr score``."""
from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from kdasr.cli.main import cli
from kdasr.score.wer import (
    compute_wer,
    format_utt,
    read_text_file,
    write_errs,
    write_recogs,
    write_wer_summary,
)

REFS = {"u1": "a b c d".split(), "u2": "the cat sat".split(), "u3": "hello world".split()}
HYPS = {"u1": "a x c d e".split(), "u2": "the sat".split(), "u3": "hello world".split()}


def test_counts_and_wer_line():
    s = compute_wer(REFS, HYPS)
    assert (s.ins, s.dels, s.subs, s.errors, s.ref_words, s.corr) == (1, 1, 1, 3, 9, 7)
    assert s.wer == pytest.approx(100 * 3 / 9)
    assert s.wer_line() == "%WER 33.33 [ 3 / 9, 1 ins, 1 del, 1 sub ]"
    assert [u.id for u in s.utts] == ["u1", "u2", "u3"]
    assert s.utts[0].ali == (("a", "a"), ("b", "x"), ("c", "c"), ("d", "d"), (None, "e"))
    assert s.sentence_errors == 2


def test_cer_counts_characters_and_the_spaces_between_words():
    s = compute_wer(REFS, HYPS)
    # u1 "a b c d" -> "a x c d e": 1 sub + 2 ins (" e"); u2 "the cat sat" -> "the sat": 4 del; u3 exact
    assert s.char_counts == (7, 7 + 11 + 11)
    assert s.cer == pytest.approx(100 * 7 / 29)
    assert s.cer_line() == "%CER 24.14 [ 7 / 29 characters, spaces between words counted ]"
    # a split word costs one character (the space), not two words
    split = compute_wer({"u": ["today"]}, {"u": ["to", "day"]})
    assert split.char_counts == (1, 5) and split.wer == 200.0
    assert compute_wer({"u": []}, {"u": []}).cer == 0.0 and math.isinf(compute_wer({"u": []}, {"u": ["a"]}).cer)


def test_per_utterance_rendering_merges_error_runs():
    s = compute_wer({"x": "a b c d".split()}, {"x": "p q c".split()})
    assert format_utt(s.utts[0]) == "x:\t(a b->p q) c (d->*)"
    s = compute_wer(REFS, HYPS)
    assert format_utt(s.utts[0]) == "u1:\ta (b->x) c d (*->e)"


def test_empty_hypothesis_and_empty_reference():
    s = compute_wer({"u": ["a", "b"]}, {"u": []})
    assert s.wer_line() == "%WER 100.00 [ 2 / 2, 0 ins, 2 del, 0 sub ]"
    silent = compute_wer({"u": []}, {"u": []})
    assert silent.wer == 0.0 and silent.wer_line() == "%WER 0.00 [ 0 / 0, 0 ins, 0 del, 0 sub ]"
    noisy = compute_wer({"u": []}, {"u": ["uh"]})
    assert math.isinf(noisy.wer) and noisy.ins == 1
    mixed = compute_wer({"u": [], "v": ["a"]}, {"u": ["uh"], "v": ["a"]})
    assert mixed.wer_line() == "%WER 100.00 [ 1 / 1, 1 ins, 0 del, 0 sub ]"


def test_literal_star_word_is_not_a_gap():
    s = compute_wer({"u": ["*", "a"]}, {"u": ["*", "a"]})
    assert s.errors == 0 and s.corr == 2


def test_id_mismatch_modes():
    refs, hyps = {"a": ["x"], "b": ["y"]}, {"a": ["x"], "c": ["z"]}
    with pytest.raises(ValueError, match="1 ids without hypothesis"):
        compute_wer(refs, hyps)
    assert compute_wer(refs, hyps, mode="all").wer_line() == "%WER 50.00 [ 1 / 2, 0 ins, 1 del, 0 sub ]"
    assert compute_wer(refs, hyps, mode="present").wer_line() == "%WER 0.00 [ 0 / 1, 0 ins, 0 del, 0 sub ]"


def test_files(tmp_path):
    s = compute_wer(REFS, HYPS)
    write_errs(tmp_path / "errs.txt", s, conditions={"u1": "clean", "u2": "noisy"})
    text = (tmp_path / "errs.txt").read_text()
    lines = text.splitlines()
    assert lines[0] == "%WER 33.33 [ 3 / 9, 1 ins, 1 del, 1 sub ]"
    for section in ("PER-CONDITION:", "PER-UTT DETAILS: corr or (ref->hyp)", "SUBSTITUTIONS: count ref -> hyp",
                    "DELETIONS: count ref", "INSERTIONS: count hyp"):
        assert any(line.startswith(section) for line in lines), section
    assert "u2:\tthe (cat->*) sat" in lines
    assert "1   b -> x" in lines and "1   cat" in lines and "1   e" in lines
    cond = [line for line in lines if line.startswith(("clean", "noisy", "other"))]
    assert cond[0].startswith("clean") and "%WER 50.00 [ 2 / 4, 1 ins, 0 del, 1 sub ]" in cond[0]
    assert cond[2].startswith("other") and "%WER 0.00 [ 0 / 2" in cond[2]
    assert s.by_condition({"u1": "clean"})["clean"].errors == 2

    write_recogs(tmp_path / "recogs.txt", REFS, HYPS)
    rec = (tmp_path / "recogs.txt").read_text().splitlines()
    assert rec[:2] == ["u1:\tref=['a', 'b', 'c', 'd']", "u1:\thyp=['a', 'x', 'c', 'd', 'e']"]
    assert len(rec) == 6

    write_wer_summary(tmp_path / "wer-summary.txt", {"beam": 40.0, "greedy": s.wer})
    assert (tmp_path / "wer-summary.txt").read_text() == "settings\tWER\ngreedy\t33.33\nbeam\t40.00\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_read_text_file(tmp_path):
    p = tmp_path / "text"
    p.write_text("u1 hello world\nu2\n\nu3  a   b \n")
    assert read_text_file(p) == {"u1": ["hello", "world"], "u2": [], "u3": ["a", "b"]}
    p.write_text("u1 a\nu1 b\n")
    with pytest.raises(ValueError, match=":2: utterance id 'u1' appears twice"):
        read_text_file(p)


def test_score_cli(tmp_path):
    ref, hyp, cond = tmp_path / "ref.txt", tmp_path / "hyp.txt", tmp_path / "cond.txt"
    ref.write_text("".join(f"{k} {' '.join(v)}\n" for k, v in REFS.items()))
    hyp.write_text("".join(f"{k} {' '.join(v)}\n" for k, v in HYPS.items()))
    cond.write_text("u1 clean\nu2 noisy\nu3 noisy\n")
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["score", "--ref", str(ref), "--hyp", str(hyp), "--out-dir", str(out),
                                   "--name", "dev", "--conditions", str(cond)])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == "%WER 33.33 [ 3 / 9, 1 ins, 1 del, 1 sub ]"
    assert "noisy\t%WER 20.00 [ 1 / 5, 0 ins, 1 del, 0 sub ]" in res.output
    assert (out / "errs-dev.txt").read_text().startswith("%WER 33.33 [ 3 / 9, 1 ins, 1 del, 1 sub ]\n")
    assert (out / "wer-summary-dev.txt").read_text() == "settings\tWER\nhyp.txt\t33.33\n"
    assert (out / "recogs-dev.txt").exists()

    hyp.write_text("u1 a b c d\n")
    res = CliRunner().invoke(cli, ["score", "--ref", str(ref), "--hyp", str(hyp), "--out-dir", str(out)])
    assert res.exit_code != 0 and "without hypothesis" in res.output
    res = CliRunner().invoke(cli, ["score", "--ref", str(ref), "--hyp", str(hyp), "--out-dir", str(out),
                                   "--mode", "all", "--setting", "sys1"])
    assert res.exit_code == 0 and res.output.startswith("%WER 55.56 [ 5 / 9, 0 ins, 5 del, 0 sub ]")
    assert (out / "wer-summary-test.txt").read_text() == "settings\tWER\nsys1\t55.56\n"
