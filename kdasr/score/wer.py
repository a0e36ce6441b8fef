"""Word error rate with kaldialign, written in icefall's file conventions.

``recogs-*.txt``, ``errs-*.txt`` and ``wer-summary-*.txt`` look like icefall's
so results can be compared with published recipes; the first line of
``errs-*.txt`` is Kaldi's ``%WER x.xx [ E / N, I ins, D del, S sub ]``.
"""
from __future__ import annotations

import functools
import logging
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence

import kaldialign

from kdasr.utils.io import Pathlike, atomic_write_text, read_utf8

#: how a gap prints in alignments (icefall's ERR); in memory a gap is ``None``
EPS = "*"
MODES = ("strict", "all", "present")
NO_CONDITION = "other"


@dataclass(frozen=True)
class UttAlignment:
    """One utterance's reference, hypothesis and word alignment (``None`` marks a gap)."""

    id: str
    ref: tuple[str, ...]
    hyp: tuple[str, ...]
    ali: tuple[tuple[Optional[str], Optional[str]], ...]

    @property
    def ins(self) -> int:
        return sum(1 for r, _ in self.ali if r is None)

    @property
    def dels(self) -> int:
        return sum(1 for _, h in self.ali if h is None)

    @property
    def subs(self) -> int:
        return sum(1 for r, h in self.ali if r is not None and h is not None and r != h)

    @property
    def errors(self) -> int:
        return self.ins + self.dels + self.subs


def align_words(ref: Sequence[str], hyp: Sequence[str]) -> list[tuple[Optional[str], Optional[str]]]:
    """Levenshtein alignment (kaldialign) of two word lists; a gap is ``None``.

    Words are aligned as integer ids, so a transcript containing a literal
    ``*`` is never mistaken for a gap.
    """
    vocab: dict[str, int] = {}
    r = [vocab.setdefault(w, len(vocab)) for w in ref]
    h = [vocab.setdefault(w, len(vocab)) for w in hyp]
    words = list(vocab)
    return [(None if a < 0 else words[a], None if b < 0 else words[b]) for a, b in kaldialign.align(r, h, -1)]


class WerStats:
    """Corpus totals and per-utterance alignments (utterances sorted by id)."""

    def __init__(self, utts: Iterable[UttAlignment]) -> None:
        self.utts: list[UttAlignment] = sorted(utts, key=lambda u: u.id)
        self.sub_pairs: Counter = Counter()
        self.del_words: Counter = Counter()
        self.ins_words: Counter = Counter()
        self.corr = 0
        for u in self.utts:
            for r, h in u.ali:
                if r is None:
                    self.ins_words[h] += 1
                elif h is None:
                    self.del_words[r] += 1
                elif r != h:
                    self.sub_pairs[(r, h)] += 1
                else:
                    self.corr += 1
        self.ins = sum(self.ins_words.values())
        self.dels = sum(self.del_words.values())
        self.subs = sum(self.sub_pairs.values())
        self.ref_words = sum(len(u.ref) for u in self.utts)

    @property
    def errors(self) -> int:
        return self.ins + self.dels + self.subs

    @property
    def num_utts(self) -> int:
        return len(self.utts)

    @property
    def wer(self) -> float:
        """Percent; with no reference words it is 0 without errors and ``inf`` with insertions."""
        if self.ref_words == 0:
            return 0.0 if self.errors == 0 else math.inf
        return 100.0 * self.errors / self.ref_words

    @functools.cached_property
    def char_counts(self) -> tuple[int, int]:
        """(character edits, reference characters) of the words joined by single spaces (spaces count).

        Char-token recipes and speech that WER hides (a weak model spelling half a word right) need it;
        one convention for every table, since counting spaces or not moves CER by several points.
        """
        edits = refs = 0
        for u in self.utts:
            ref, hyp = " ".join(u.ref), " ".join(u.hyp)
            edits += kaldialign.edit_distance(ref, hyp)["total"]
            refs += len(ref)
        return edits, refs

    @property
    def cer(self) -> float:
        """Percent, as :attr:`wer` for characters (:attr:`char_counts`)."""
        edits, refs = self.char_counts
        if refs == 0:
            return 0.0 if edits == 0 else math.inf
        return 100.0 * edits / refs

    def cer_line(self) -> str:
        edits, refs = self.char_counts
        return f"%CER {self.cer:.2f} [ {edits} / {refs} characters, spaces between words counted ]"

    @property
    def sentence_errors(self) -> int:
        return sum(1 for u in self.utts if u.errors)

    def wer_line(self) -> str:
        """Kaldi's ``%WER x.xx [ E / N, I ins, D del, S sub ]``."""
        return f"%WER {self.wer:.2f} [ {self.errors} / {self.ref_words}, {self.ins} ins, {self.dels} del, {self.subs} sub ]"

    def subset(self, ids: Iterable[str]) -> "WerStats":
        keep = set(ids)
        return WerStats(u for u in self.utts if u.id in keep)

    def by_condition(self, conditions: Mapping[str, str]) -> dict[str, "WerStats"]:
        """Stats per test condition (``id -> condition``); unmapped utterances go to ``other``."""
        groups: dict[str, list[UttAlignment]] = {}
        for u in self.utts:
            groups.setdefault(conditions.get(u.id, NO_CONDITION), []).append(u)
        return {c: WerStats(groups[c]) for c in sorted(groups)}

    def __repr__(self) -> str:
        return f"WerStats({self.wer_line()}, {self.num_utts} utterances)"


def compute_wer(
    refs: Mapping[str, Sequence[str]],
    hyps: Mapping[str, Sequence[str]],
    mode: str = "strict",
) -> WerStats:
    """Align each utterance's words; ``mode`` handles ids present on one side only (as Kaldi's compute-wer).

    ``strict`` requires the same ids on both sides, ``all`` scores every
    reference (a missing hypothesis is empty), ``present`` scores only ids
    with a hypothesis. Hypotheses without a reference are never scored.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    missing = sorted(set(refs) - set(hyps))
    extra = sorted(set(hyps) - set(refs))
    if mode == "strict" and (missing or extra):
        raise ValueError(
            f"references and hypotheses differ: {len(missing)} ids without hypothesis {missing[:5]}, "
            f"{len(extra)} ids without reference {extra[:5]} (use mode 'all' or 'present' to score anyway)"
        )
    if extra:
        logging.warning("%d hypotheses have no reference and are not scored, e.g. %s", len(extra), extra[:5])
    if missing and mode == "all":
        logging.warning("%d references have no hypothesis and count as deletions, e.g. %s", len(missing), missing[:5])
    ids = [i for i in refs if mode == "all" or i in hyps]
    utts = []
    for i in ids:
        ref, hyp = tuple(refs[i]), tuple(hyps.get(i, ()))
        utts.append(UttAlignment(i, ref, hyp, tuple(align_words(ref, hyp))))
    return WerStats(utts)


def _combined_alignment(ali: Sequence[tuple[Optional[str], Optional[str]]]) -> list[tuple[str, str]]:
    """icefall's PER-UTT rendering: runs of consecutive errors merge into one ``(ref->hyp)`` item."""
    merged: list[tuple[list[Optional[str]], list[Optional[str]]]] = []
    prev_error = False
    for r, h in ali:
        error = r != h
        if error and prev_error:
            merged[-1][0].append(r)
            merged[-1][1].append(h)
        else:
            merged.append(([r], [h]))
        prev_error = error
    out = []
    for rs, hs in merged:
        rw = [w for w in rs if w is not None]
        hw = [w for w in hs if w is not None]
        out.append((" ".join(rw) if rw else EPS, " ".join(hw) if hw else EPS))
    return out


def format_utt(u: UttAlignment) -> str:
    """``id:\\tword (ref->hyp) word ...`` as in icefall's errs files."""
    items = (r if r == h else f"({r}->{h})" for r, h in _combined_alignment(u.ali))
    return f"{u.id}:\t" + " ".join(items)


def format_conditions(per_condition: Mapping[str, WerStats]) -> list[str]:
    width = max([len(c) for c in per_condition] + [len("condition")])
    lines = [f"{'condition':<{width}}  %WER [ errors / words, ins, del, sub ]  utterances"]
    for cond, s in per_condition.items():
        lines.append(f"{cond:<{width}}  {s.wer_line()}  {s.num_utts}")
    return lines


def _ranked(counter: Counter, top_n: Optional[int]) -> list:
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:top_n]


def format_errs(
    stats: WerStats,
    conditions: Optional[Mapping[str, str]] = None,
    top_n: Optional[int] = None,
) -> str:
    """The text of an ``errs-*.txt`` file (see ``write_errs``)."""
    lines = [
        stats.wer_line(),
        f"%SER {100.0 * stats.sentence_errors / max(stats.num_utts, 1):.2f} "
        f"[ {stats.sentence_errors} / {stats.num_utts} ]",
        stats.cer_line(),
        f"Errors: {stats.ins} insertions, {stats.dels} deletions, {stats.subs} substitutions, "
        f"over {stats.ref_words} reference words ({stats.corr} correct)",
        "Search below for sections starting with "
        + ("PER-CONDITION:, " if conditions else "")
        + "PER-UTT DETAILS:, SUBSTITUTIONS:, DELETIONS:, INSERTIONS:, PER-WORD STATS:",
        "",
    ]
    if conditions:
        lines += ["PER-CONDITION:"] + format_conditions(stats.by_condition(conditions)) + [""]
    lines.append("PER-UTT DETAILS: corr or (ref->hyp)  ")
    lines += [format_utt(u) for u in stats.utts]
    lines += ["", "SUBSTITUTIONS: count ref -> hyp"]
    lines += [f"{n}   {r} -> {h}" for (r, h), n in _ranked(stats.sub_pairs, top_n)]
    lines += ["", "DELETIONS: count ref"]
    lines += [f"{n}   {w}" for w, n in _ranked(stats.del_words, top_n)]
    lines += ["", "INSERTIONS: count hyp"]
    lines += [f"{n}   {w}" for w, n in _ranked(stats.ins_words, top_n)]
    lines += ["", "PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp"]
    lines += _per_word(stats, top_n)
    return "\n".join(lines) + "\n"


def _per_word(stats: WerStats, top_n: Optional[int]) -> list[str]:
    # corr, errors as ref (sub+del), errors as hyp (sub+ins), count in ref, count in hyp
    words: dict[str, list[int]] = {}
    for u in stats.utts:
        for r, h in u.ali:
            if r is not None:
                words.setdefault(r, [0, 0, 0])[1] += 1
            if h is not None:
                words.setdefault(h, [0, 0, 0])[2] += 1
            if r is not None and r == h:
                words[r][0] += 1
    rows = []
    for w, (corr, in_ref, in_hyp) in words.items():
        rows.append((in_ref - corr + in_hyp - corr, w, corr, in_ref, in_hyp))
    rows.sort(key=lambda x: (-x[0], x[1]))
    return [f"{w}   {corr} {errs} {in_ref} {in_hyp}" for errs, w, corr, in_ref, in_hyp in rows[:top_n]]


def write_errs(
    path: Pathlike,
    stats: WerStats,
    conditions: Optional[Mapping[str, str]] = None,
    top_n: Optional[int] = None,
) -> None:
    """icefall-style ``errs-*.txt``: ``%WER`` line, totals, per-condition table, per-utterance
    alignments, then the most frequent substitutions, deletions, insertions (``top_n`` each, all if None)."""
    atomic_write_text(path, format_errs(stats, conditions, top_n))


def write_recogs(path: Pathlike, refs: Mapping[str, Sequence[str]], hyps: Mapping[str, Sequence[str]]) -> None:
    """icefall's ``recogs-*.txt``: ``id:\\tref=[...]`` and ``id:\\thyp=[...]`` per utterance, sorted by id."""
    lines = []
    for i in sorted(set(refs) | set(hyps)):
        lines.append(f"{i}:\tref={list(refs.get(i, []))}")
        lines.append(f"{i}:\thyp={list(hyps.get(i, []))}")
    atomic_write_text(path, "".join(line + "\n" for line in lines))


def write_wer_summary(path: Pathlike, name_to_wer: Mapping[str, float]) -> None:
    """icefall's ``wer-summary-*.txt``: ``settings<TAB>WER``, best setting first."""
    rows = sorted(name_to_wer.items(), key=lambda kv: (kv[1], kv[0]))
    atomic_write_text(path, "settings\tWER\n" + "".join(f"{k}\t{v:.2f}\n" for k, v in rows))


def read_text_file(path: Pathlike) -> dict[str, list[str]]:
    """Kaldi ``text``: ``id word word ...`` per line; an id alone is an empty transcript."""
    out: dict[str, list[str]] = {}
    for n, line in enumerate(read_utf8(path).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if fields[0] in out:
            raise ValueError(f"{path}:{n}: utterance id {fields[0]!r} appears twice")
        out[fields[0]] = fields[1:]
    return out


def read_conditions_file(path: Pathlike) -> dict[str, str]:
    """``id condition`` per line (e.g. Aurora-4's A/B/C/D), for the per-condition breakdown."""
    out: dict[str, str] = {}
    for n, line in enumerate(read_utf8(path).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError(f"{path}:{n}: expected 'id condition', got {line!r}")
        out[fields[0]] = fields[1]
    return out


def score_text_files(
    ref_path: Pathlike,
    hyp_path: Pathlike,
    out_dir: Pathlike,
    name: str = "test",
    setting: Optional[str] = None,
    conditions_path: Optional[Pathlike] = None,
    mode: str = "strict",
    top_n: Optional[int] = None,
) -> WerStats:
    """Score Kaldi-style text files and write ``{recogs,errs,wer-summary}-<name>.txt`` to ``out_dir``.

    ``setting`` labels the row of the WER summary (default: the hypothesis
    file's name), so any system's output can be compared with kdasr's.
    """
    refs, hyps = read_text_file(ref_path), read_text_file(hyp_path)
    stats = compute_wer(refs, hyps, mode=mode)
    conditions = read_conditions_file(conditions_path) if conditions_path else None
    out_dir = Path(out_dir)
    scored = {u.id for u in stats.utts}
    write_recogs(out_dir / f"recogs-{name}.txt",
                 {i: refs[i] for i in scored}, {i: hyps.get(i, []) for i in scored})
    write_errs(out_dir / f"errs-{name}.txt", stats, conditions, top_n)
    write_wer_summary(out_dir / f"wer-summary-{name}.txt", {setting or Path(hyp_path).name: stats.wer})
    return stats
