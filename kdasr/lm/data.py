"""LM text: one sentence a line, a word vocabulary, and sentence batches.

A sentence is scored as ``<s> w1 .. wn </s>``: the model reads ``<s> w1 .. wn``
and predicts ``w1 .. wn </s>``, so a sentence's log-probability includes its
end, which is what N-best rescoring needs. Words outside the vocabulary
become ``<unk>``; a line that is empty, or whose every word is unknown, says
nothing about word order and is skipped and counted instead.
"""
from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import torch

from kdasr.errors import KdasrError
from kdasr.utils.io import Pathlike, atomic_write_text

UNK, BOS, EOS = "<unk>", "<s>", "</s>"
SPECIALS = (UNK, BOS, EOS)
PAD_ID = -100  # target padding: torch's cross-entropy ignore_index


class LmDataError(KdasrError, ValueError):
    """A text file or vocabulary that cannot be used; the message names the file and line."""


def read_lines(path: Pathlike) -> list[tuple[int, list[str]]]:
    """``(line number, words)`` of each non-empty line; a non-UTF-8 line is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise LmDataError(f"text file {path} does not exist")
    out = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise LmDataError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            words = line.split()
            if words:
                out.append((lineno, words))
    return out


@dataclass
class Vocab:
    """Words by id; ids 0, 1, 2 are ``<unk>``, ``<s>``, ``</s>``."""

    words: list[str]
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if tuple(self.words[:3]) != SPECIALS:
            raise LmDataError(f"a vocabulary must start with {', '.join(SPECIALS)}, got {self.words[:3]}")
        self.index = {w: i for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            dup = [w for w, n in Counter(self.words).items() if n > 1]
            raise LmDataError(f"vocabulary repeats words: {dup[:10]}")

    def __len__(self) -> int:
        return len(self.words)

    @property
    def unk_id(self) -> int:
        return 0

    @property
    def bos_id(self) -> int:
        return 1

    @property
    def eos_id(self) -> int:
        return 2

    def encode(self, words: Sequence[str]) -> list[int]:
        return [self.index.get(w, 0) for w in words]

    @classmethod
    def build(cls, sentences: Iterable[Sequence[str]], min_count: int = 1, max_size: Optional[int] = None) -> "Vocab":
        """The words seen at least ``min_count`` times, most frequent first (ties by spelling)."""
        counts = Counter(w for s in sentences for w in s if w not in SPECIALS)
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        if max_size is not None:
            kept = kept[: max(0, max_size - len(SPECIALS))]
        return cls(list(SPECIALS) + kept)

    @classmethod
    def load(cls, path: Pathlike) -> "Vocab":
        path = Path(path)
        if not path.is_file():
            raise LmDataError(f"vocabulary {path} does not exist")
        return cls([w for _, (w, *_) in read_lines(path)])

    def save(self, path: Pathlike) -> None:
        atomic_write_text(path, "".join(w + "\n" for w in self.words))


@dataclass
class LmText:
    """Encoded sentences of one file and what was skipped, by reason."""

    path: str
    sentences: list[list[int]]
    skipped: dict[str, int]
    num_words: int
    num_oov: int

    @property
    def num_tokens(self) -> int:
        """Predicted tokens: the words plus one ``</s>`` per sentence."""
        return self.num_words + len(self.sentences)


def load_text(path: Pathlike, vocab: Vocab) -> LmText:
    """Encode ``path`` with ``vocab``; empty and all-unknown lines are skipped (counted, logged)."""
    lines = read_lines(path)
    raw_lines = sum(1 for _ in Path(path).open("rb"))
    skipped = {"empty": raw_lines - len(lines), "oov_only": 0}
    sentences, oov, first_oov_only = [], 0, None
    for lineno, words in lines:
        ids = vocab.encode(words)
        n_unk = sum(1 for i in ids if i == vocab.unk_id)
        if n_unk == len(ids):
            skipped["oov_only"] += 1
            first_oov_only = first_oov_only or lineno
            continue
        oov += n_unk
        sentences.append(ids)
    if skipped["empty"] or skipped["oov_only"]:
        logging.info("%s: skipped %d empty and %d all-unknown lines%s", path, skipped["empty"], skipped["oov_only"],
                     f" (first all-unknown: line {first_oov_only})" if first_oov_only else "")
    if not sentences:
        raise LmDataError(f"{path} holds no usable sentence ({skipped['empty']} empty lines, "
                          f"{skipped['oov_only']} with only unknown words)")
    return LmText(str(path), sentences, skipped, sum(len(s) for s in sentences), oov)


def make_batches(sentences: Sequence[Sequence[int]], max_tokens: int, shuffle_seed: Optional[int] = None
                 ) -> list[list[int]]:
    """Sentence indices grouped into batches of at most ``max_tokens`` padded tokens.

    Sentences are sorted by length so that a batch wastes little padding; with
    ``shuffle_seed`` the order within equal lengths and the order of batches
    are shuffled by that seed alone, so an epoch's batches can be rebuilt
    exactly when a killed run resumes.
    """
    order = list(range(len(sentences)))
    rng = random.Random(shuffle_seed) if shuffle_seed is not None else None
    if rng is not None:
        rng.shuffle(order)
    order.sort(key=lambda i: len(sentences[i]))
    batches, cur, cur_max = [], [], 0
    for i in order:
        n = len(sentences[i]) + 1
        if cur and max(cur_max, n) * (len(cur) + 1) > max_tokens:
            batches.append(cur)
            cur, cur_max = [], 0
        cur.append(i)
        cur_max = max(cur_max, n)
    if cur:
        batches.append(cur)
    if rng is not None:
        rng.shuffle(batches)
    return batches


def collate(sentences: Sequence[Sequence[int]], vocab: Vocab) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(inputs (B, L), targets (B, L), lengths (B,))``: inputs start with ``<s>``, targets end with ``</s>``
    and are padded with :data:`PAD_ID`; inputs are padded with ``</s>`` (never read past a length)."""
    lens = torch.tensor([len(s) + 1 for s in sentences])
    L = int(lens.max())
    inputs = torch.full((len(sentences), L), vocab.eos_id, dtype=torch.long)
    targets = torch.full((len(sentences), L), PAD_ID, dtype=torch.long)
    for b, s in enumerate(sentences):
        inputs[b, 0] = vocab.bos_id
        inputs[b, 1 : len(s) + 1] = torch.tensor(s, dtype=torch.long)
        targets[b, : len(s)] = torch.tensor(s, dtype=torch.long)
        targets[b, len(s)] = vocab.eos_id
    return inputs, targets, lens


def iter_batches(sentences: Sequence[Sequence[int]], batches: Sequence[Sequence[int]], vocab: Vocab
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    for idx in batches:
        yield collate([sentences[i] for i in idx], vocab)
