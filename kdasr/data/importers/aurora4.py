"""Aurora-4 (WSJ0 with noise and channel conditions) -> kdasr manifests."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Iterable, Optional, Sequence

from lhotse import (
    CutSet,
)

from kdasr.data.errors import DataError
from kdasr.data.importers.common import (
    AUDIO_EXTENSIONS,
    UNKNOWN_CONDITION,
    Item,
    Problems,
    manifests_from_items,
    norm_text,
    settle,
    write_parts,
)
from kdasr.data.importers.kaldi import (
    choose_speakers,
)
from kdasr.utils.io import NotUtf8Error, Pathlike, read_utf8

# ----------------------------------------------------------------- Aurora-4

AURORA4_SETS = {"train_clean": "train_si84_clean", "train_multi": "train_si84_multi", "test": "test_eval92"}
AURORA4_CONDITION_GROUPS = {
    "01": "A", **{f"{i:02d}": "B" for i in range(2, 8)}, "08": "C", **{f"{i:02d}": "D" for i in range(9, 15)},
}
AURORA4_TRAIN_UTTS = 7138
AURORA4_TEST_UTTS_PER_CONDITION = 330
_RATE_DIR = re.compile(r"^(?:wav)?[_-]?(8|16)(?:k|khz|000|000hz)$", re.IGNORECASE)
_CONDITION_DIR = re.compile(r"^(0[1-9]|1[0-4])$")
_DOT_LINE = re.compile(r"^(?P<text>.*?)\s*\((?P<id>[A-Za-z0-9_.-]+)\)\s*$")


def _find_named_dirs(root: Path, name: str, max_depth: int = 3) -> list[Path]:
    """Directories called ``name`` (any case) within ``max_depth`` levels of ``root`` (root included)."""
    found, frontier = [], [root]
    for _ in range(max_depth + 1):
        nxt = []
        for d in frontier:
            if d.name.lower() == name.lower():
                found.append(d)
                continue
            try:
                nxt += sorted(p for p in d.iterdir() if p.is_dir())
            except OSError:
                continue
        frontier = nxt
    return found


def _rate_of(components: Iterable[str]) -> Optional[int]:
    """Sampling rate named by a ``wav16k`` / ``8k`` / ``16kHz`` style directory, if any."""
    for c in components:
        m = _RATE_DIR.match(c)
        if m:
            return int(m.group(1)) * 1000
    return None


def _aurora4_audio(corpus_dir: Path, set_dirs: list[Path], sampling_rate: int) -> list[Path]:
    """Audio files of one set at the requested rate (files under another rate's directory are left out)."""
    files = []
    for d in set_dirs:
        for f in sorted(d.rglob("*")):
            if f.suffix.lower() in AUDIO_EXTENSIONS and f.is_file():
                rate = _rate_of(f.relative_to(corpus_dir).parts[:-1])
                if rate is None or rate == sampling_rate:
                    files.append(f)
    return files


def _aurora4_transcripts(roots: list[Path], utt_ids: set[str]) -> dict[str, str]:
    """Utterance id -> transcript from WSJ ``.dot`` / ``.lsn`` files and ``.txt`` files.

    Precedence: a per-utterance ``<utt>.txt`` over ``.dot`` (the WSJ original)
    over ``.lsn`` over list-form ``.txt`` lines ``<utt> <text>``. Within a kind
    the first file in path order wins; disagreements are logged.
    """
    kinds: dict[str, dict[str, str]] = {"utt_txt": {}, "dot": {}, "lsn": {}, "list_txt": {}}
    conflicts = 0

    def put(kind: str, utt: str, text: str) -> None:
        nonlocal conflicts
        table = kinds[kind]
        if utt in table and table[utt] != text:
            conflicts += 1
        table.setdefault(utt, text)

    for root in roots:
        for f in sorted(root.rglob("*")):
            suffix = f.suffix.lower()
            if suffix not in (".dot", ".lsn", ".txt") or not f.is_file():
                continue
            try:
                content = read_utf8(f)
            except NotUtf8Error as e:
                if suffix == ".txt" and f.stem.lower() not in utt_ids:
                    logging.debug("skipping %s (not UTF-8): %s", f, e)
                    continue
                raise
            if suffix == ".txt" and f.stem.lower() in utt_ids:
                put("utt_txt", f.stem.lower(), norm_text(content))
                continue
            for line in content.splitlines():
                if suffix in (".dot", ".lsn"):
                    m = _DOT_LINE.match(line.strip())
                    if m:
                        put(suffix[1:], m.group("id").lower(), norm_text(m.group("text")))
                else:
                    fields = line.strip().split(maxsplit=1)
                    if fields and fields[0].lower() in utt_ids:
                        put("list_txt", fields[0].lower(), norm_text(fields[1] if len(fields) > 1 else ""))
    if conflicts:
        logging.warning("%d utterances have differing transcripts in files of one kind; the first file wins", conflicts)
    return {**kinds["list_txt"], **kinds["lsn"], **kinds["dot"], **kinds["utt_txt"]}


def import_aurora4(
    corpus_dir: Pathlike,
    out_dir: Pathlike,
    sampling_rate: int = 16000,
    transcript_dir: Optional[Pathlike] = None,
    dev_speakers: int = 0,
    seed: int = 0,
    parts: Optional[Sequence[str]] = None,
    skip_bad: bool = False,
    normalize_text: str = "none",
) -> dict[str, CutSet]:
    """Import Aurora-4 (WSJ0 SI-84 training, eval92 test in 14 conditions) at 16 or 8 kHz.

    Layout (directory names matched case-insensitively, up to 3 levels below
    ``corpus_dir``, so ``corpus_dir`` may be the Aurora-4 root or its parent)::

        <corpus_dir>/[aurora4/]
          train_si84_clean/ ... <spk>/<utt>.wv1      -> part train_clean  (cut id <utt>)
          train_si84_multi/ ... <spk>/<utt>.wv1|.wv2 -> part train_multi  (cut id <utt>_multi)
          test_eval92/ ... 01/ ... 14/ ... <utt>.wv1|.wv2 -> part test    (cut id <utt>_<cond>)

    Audio is found by extension (.wv1 .wv2 .sph .wav .flac, any depth). The
    16/8 kHz copies are told apart by a directory named like ``wav16k``,
    ``16k``, ``16kHz``, ``16000`` (or the 8 kHz forms) at any level, e.g.
    ``wav8k/test_eval92/05/...`` or ``test_eval92/wav8k/05/...``; files under
    no such directory are used if their rate equals ``sampling_rate``. SPHERE
    files must be uncompressed (libsndfile; WSJ's shorten-compressed files need
    sph2pipe first). The test condition is the first ``01``..``14`` directory
    below ``test_eval92``; supervisions carry ``custom`` fields ``condition``
    and ``condition_group`` (A = 01, B = 02-07, C = 08, D = 09-14).

    Transcripts come from ``.dot`` / ``.lsn`` lines ``TEXT (uttid)``, a
    per-utterance ``<uttid>.txt`` or ``.txt`` lines ``uttid TEXT``, searched in
    ``corpus_dir`` and ``transcript_dir`` (e.g. the WSJ0 discs), ids matched
    case-insensitively; ids are lower case. The speaker is the first three
    characters of the utterance id (WSJ convention). ``normalize_text="wsj"``
    cleans the WSJ markup out of the transcripts
    (:func:`normalize_wsj_transcript`); ``"none"`` keeps them as written.

    ``dev_speakers`` > 0 holds out that many training speakers (chosen with
    ``seed``): their multi-condition utterances form part ``dev`` and none of
    their utterances stay in ``train_clean`` / ``train_multi``. The
    ``dev_0330`` set is not imported. ``parts`` limits the output parts.
    """
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    if sampling_rate not in (16000, 8000):
        raise ValueError(f"Aurora-4 comes at 16000 or 8000 Hz, not {sampling_rate}")
    if normalize_text not in ("none", "wsj"):
        raise ValueError(f"normalize_text must be none or wsj, not {normalize_text!r}")
    if not corpus_dir.is_dir():
        raise DataError(f"Aurora-4 directory {corpus_dir} does not exist")
    known = list(AURORA4_SETS) + ["dev"]
    wanted = list(parts) if parts else known
    bad_parts = [p for p in wanted if p not in known]
    if bad_parts:
        raise ValueError(f"unknown Aurora-4 part(s) {bad_parts}; parts are {known}")
    if "dev" in wanted and dev_speakers <= 0:
        if parts:
            raise ValueError("part 'dev' needs dev_speakers > 0 (it is held out from training by speaker)")
        wanted.remove("dev")

    # Audio files per source set.
    files: dict[str, list[Path]] = {}
    for part, set_name in AURORA4_SETS.items():
        if part not in wanted and not (part.startswith("train") and "dev" in wanted):
            continue
        dirs = _find_named_dirs(corpus_dir, set_name)
        found = _aurora4_audio(corpus_dir, dirs, sampling_rate) if dirs else []
        if not found:
            dir_list = ", ".join(map(str, dirs))
            what = f"no {sampling_rate} Hz audio in {dir_list}" if dirs else f"no {set_name} directory"
            if parts and part in parts:
                raise DataError(f"Aurora-4 part {part}: {what} under {corpus_dir}")
            logging.warning("Aurora-4 part %s: %s under %s; part not imported", part, what, corpus_dir)
            continue
        files[part] = found
    if not files:
        raise DataError(
            f"no Aurora-4 data found under {corpus_dir} (expected train_si84_clean, train_si84_multi, test_eval92)"
        )

    problems = {part: Problems(part) for part in [*files, "dev"]}
    items: dict[str, list[Item]] = {}
    for part, paths in files.items():
        items[part] = []
        for f in paths:
            utt = f.stem.lower()
            custom = None
            if part == "test":
                below = f.relative_to(next(d for d in f.parents if d.name.lower() == AURORA4_SETS["test"])).parts[:-1]
                cond = next((c for c in below if _CONDITION_DIR.match(c)), None)
                if cond is None:
                    problems[part].add(str(f), UNKNOWN_CONDITION, f"{f}: no condition directory 01..14 in its path")
                    continue
                custom = {"condition": cond, "condition_group": AURORA4_CONDITION_GROUPS[cond]}
                item_id = f"{utt}_{cond}"
            else:
                item_id = utt if part == "train_clean" else f"{utt}_multi"
            where = f"Aurora-4 {AURORA4_SETS[part]}"
            items[part].append(Item(id=item_id, path=f, text=None, where=where, speaker=utt[:3], custom=custom))

    roots = [corpus_dir] + ([Path(transcript_dir)] if transcript_dir is not None else [])
    transcripts = _aurora4_transcripts(roots, {f.stem.lower() for paths in files.values() for f in paths})
    for part_items in items.values():
        for item in part_items:
            item.text = transcripts.get(item.path.stem.lower())
            if item.text is not None and normalize_text == "wsj":
                item.text = normalize_wsj_transcript(item.text)

    if "dev" in wanted:
        _hold_out_dev(items, dev_speakers, seed)
    manifests = {}
    for part in wanted:
        if part not in items:
            continue
        recs, sups = manifests_from_items(items[part], problems[part], sampling_rate)
        manifests[part] = (recs, sups, problems[part])
        _log_aurora4_counts(part, len(items[part]))
    settle([m[2] for m in manifests.values()], out_dir, skip_bad)
    return write_parts(out_dir, manifests)


_WSJ_DROP = re.compile(r"^(?:\[[^\]]*\]|~|\.)$")


def normalize_wsj_transcript(text: str) -> str:
    """WSJ ``.dot``/``.lsn`` markup removed, as Kaldi's ``normalize_transcript.pl`` does it.

    Upper case; backslash quoting removed (``\\,COMMA`` -> ``,COMMA``: the
    verbalized punctuation of WSJ is spoken, so it stays a word);
    ``%PERCENT`` -> ``PERCENT``, ``.POINT`` -> ``POINT``; noise and event
    markers (``[loud_breath]``, ``[<door_slam]``, ``[phone_ring/]``), the
    truncation mark ``~`` and the pause mark ``.`` are dropped (Kaldi maps the
    noises to a noise word; a CTC model here has none); ``<word>`` (a verbal
    deletion, still spoken) -> ``word``; ``*word*`` (mispronounced) ->
    ``word``; ``--DASH`` -> ``-DASH``.
    """
    words = []
    for w in text.split():
        w = w.upper().replace("\\", "")
        if w == "%PERCENT":
            w = "PERCENT"
        elif w == ".POINT":
            w = "POINT"
        if _WSJ_DROP.match(w):
            continue
        m = re.match(r"^<([\w']+)>$", w)
        if m:
            w = m.group(1)
        elif len(w) > 2 and w.startswith("*") and w.endswith("*"):
            w = w[1:-1]
        elif w == "--DASH":
            w = "-DASH"
        if w:
            words.append(w)
    return " ".join(words)


def _hold_out_dev(items: dict[str, list[Item]], dev_speakers: int, seed: int) -> None:
    """Move ``dev_speakers`` training speakers out of both training sets; dev = their multi-condition utterances."""
    train = [p for p in ("train_multi", "train_clean") if p in items]
    if not train:
        raise DataError("Aurora-4 part dev is held out from training, but no training audio was found")
    held = choose_speakers({it.speaker for p in train for it in items[p] if it.speaker}, dev_speakers, seed)
    items["dev"] = [it for it in items[train[0]] if it.speaker in held]
    for p in train:
        items[p] = [it for it in items[p] if it.speaker not in held]
    logging.info("Aurora-4 dev: speakers %s held out of training (%d utterances)", sorted(held), len(items["dev"]))


def _log_aurora4_counts(part: str, n: int) -> None:
    expected = {
        "train_clean": AURORA4_TRAIN_UTTS,
        "train_multi": AURORA4_TRAIN_UTTS,
        "test": AURORA4_TEST_UTTS_PER_CONDITION * len(AURORA4_CONDITION_GROUPS),
    }.get(part)
    if expected is not None and n != expected:
        logging.info("Aurora-4 part %s: %d files (the full corpus has %d; fine for a subset)", part, n, expected)
