"""Kaldi data directories (wav.scp, text, utt2spk, segments) -> kdasr manifests."""
from __future__ import annotations

import io
import logging
import random
import subprocess
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Optional

from lhotse import (
    CutSet,
    SupervisionSet,
)
from lhotse.audio import info as audio_info
from lhotse.kaldi import load_kaldi_data_dir, load_kaldi_text_mapping
from lhotse.utils import fastcopy

from kdasr.data.errors import DataError
from kdasr.data.importers.common import (
    BAD_RECORDING,
    DUPLICATE_ID,
    EMPTY_AUDIO,
    EMPTY_TRANSCRIPT,
    MALFORMED,
    MISSING_AUDIO,
    NON_FINITE,
    SAMPLE_RATE,
    SEGMENT_END_TOLERANCE,
    UNKNOWN_RECORDING,
    UNREADABLE_AUDIO,
    Problems,
    audio_error,
    norm_text,
    settle,
    short_error,
    write_parts,
)
from kdasr.data.validate import (
    non_finite_in_file,
)
from kdasr.utils.io import Pathlike, read_utf8

# ----------------------------------------------------------------- Kaldi


def _read_table(path: Path, problems: Problems) -> tuple[dict[str, str], dict[str, int]]:
    """A Kaldi ``key rest`` table: (key -> rest, key -> line number); duplicate keys are reported and dropped."""
    lines = read_utf8(path).splitlines()
    mapping: dict[str, str] = {}
    line_of: dict[str, int] = {}
    dups: dict[str, list[int]] = {}
    for n, raw in enumerate(lines, 1):
        fields = raw.strip().split(maxsplit=1)
        if not fields:
            continue
        key = fields[0]
        if key in line_of:
            dups.setdefault(key, [line_of[key]]).append(n)
            continue
        mapping[key] = fields[1] if len(fields) > 1 else ""
        line_of[key] = n
    for key, ns in dups.items():
        problems.add(key, DUPLICATE_ID, f"{path}: id {key} appears on lines {', '.join(map(str, ns))}")
        del mapping[key]
    return mapping, line_of


def _probe_kaldi_entry(value: str) -> tuple[int, int, int]:
    """(sampling rate, samples, NaN/Inf samples) of a wav.scp entry: a file, or a command piping audio to stdout."""
    if value.endswith("|"):
        # The same shell lhotse uses when it later runs the command to load the audio.
        proc = subprocess.run(value[:-1], shell=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if proc.returncode != 0 or not proc.stdout:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"command exited with status {proc.returncode}" + (f": {err[-1]}" if err else ""))
        try:
            meta = audio_info(io.BytesIO(proc.stdout))
        except Exception as e:
            raise RuntimeError(f"command output is not audio: {audio_error(io.BytesIO(proc.stdout), e)}") from e
        bad = non_finite_in_file(io.BytesIO(proc.stdout))
    else:
        meta = audio_info(value)
        bad = non_finite_in_file(value)
    return int(meta.samplerate), int(meta.frames), bad


def _write_table(path: Path, rows: Iterable[tuple[str, Any]]) -> None:
    path.write_text("".join(f"{k} {v}\n" for k, v in rows), encoding="utf-8")


def _kaldi_recordings(
    wav_scp: Path, problems: Problems, sampling_rate: Optional[int]
) -> tuple[dict[str, str], dict[str, float], dict[str, int], int]:
    """Check and measure every wav.scp entry: (id -> source, id -> seconds, id -> line, rate)."""
    wavs, wav_line = _read_table(wav_scp, problems)
    sources: dict[str, str] = {}
    measured: dict[str, tuple[int, int, int]] = {}
    for rec_id, value in wavs.items():
        where = f"{wav_scp}:{wav_line[rec_id]}: recording {rec_id}"
        if not value:
            problems.add(rec_id, MALFORMED, f"{where}: no audio path or command")
            continue
        if not value.endswith("|"):
            path = Path(value)
            path = path if path.is_absolute() else Path.cwd() / path
            if not path.is_file():
                problems.add(rec_id, MISSING_AUDIO, f"{where}: audio file {path} does not exist")
                continue
            value = str(path)
        try:
            measured[rec_id] = _probe_kaldi_entry(value)
        except Exception as e:
            reason = short_error(e) if value.endswith("|") else audio_error(value, e)
            problems.add(rec_id, UNREADABLE_AUDIO, f"{where}: cannot read {value}: {reason}")
            continue
        sources[rec_id] = value
    if not measured and not problems:
        raise DataError(f"{wav_scp} lists no recordings")
    rates = Counter(sr for sr, _, _ in measured.values())
    rate = sampling_rate or (rates.most_common(1)[0][0] if rates else 16000)
    durations: dict[str, float] = {}
    for rec_id, (sr, n, bad) in measured.items():
        where = f"{wav_scp}:{wav_line[rec_id]}: recording {rec_id}"
        if sr != rate:
            problems.add(rec_id, SAMPLE_RATE, f"{where} is {sr} Hz, expected {rate} Hz")
        elif n == 0:
            problems.add(rec_id, EMPTY_AUDIO, f"{where} holds no samples")
        elif bad:
            problems.add(rec_id, NON_FINITE, f"{where} holds {bad} NaN/Inf sample(s)")
        else:
            durations[rec_id] = n / sr
    return sources, durations, wav_line, rate


def _kaldi_segments(
    segments_path: Path, wav_scp: Path, wav_line: dict[str, int], durations: dict[str, float], problems: Problems
) -> dict[str, tuple[str, float, float]]:
    """Utterance -> (recording, start, end) from a segments file; bad or orphaned segments are reported."""
    segs, seg_line = _read_table(segments_path, problems)
    utts: dict[str, tuple[str, float, float]] = {}
    for utt, rest in segs.items():
        where = f"{segments_path}:{seg_line[utt]}: utterance {utt}"
        fields = rest.split()
        try:
            if len(fields) != 3:
                raise ValueError
            rec_id, start, end = fields[0], float(fields[1]), float(fields[2])
        except ValueError:
            problems.add(utt, MALFORMED, f"{where}: expected '<utt> <recording> <start> <end>', got {rest!r}")
            continue
        if rec_id not in wav_line:
            problems.add(utt, UNKNOWN_RECORDING, f"{where}: recording {rec_id} is not in {wav_scp}")
            continue
        if rec_id not in durations:
            problems.add(utt, BAD_RECORDING, f"{where}: its recording {rec_id} was rejected")
            continue
        dur = durations[rec_id]
        end = dur if end == -1 else end  # Kaldi: -1 runs to the end of the recording
        if start < 0 or end <= start or end > dur + SEGMENT_END_TOLERANCE:
            problems.add(utt, MALFORMED, f"{where}: segment {start}-{end} s does not fit {rec_id} ({dur:.3f} s)")
            continue
        utts[utt] = (rec_id, start, min(end, dur))
    return utts


def import_kaldi_dir(
    data_dir: Pathlike,
    out_dir: Pathlike,
    part: str,
    sampling_rate: Optional[int] = None,
    skip_bad: bool = False,
    dev_speakers: int = 0,
    dev_part: str = "dev",
    seed: int = 0,
) -> CutSet:
    """Import a Kaldi data dir (wav.scp, text, optional segments, utt2spk, reco2dur, spk2gender, utt2lang).

    ``dev_speakers`` > 0 holds out that many of its speakers (chosen with
    ``seed``) as part ``dev_part``, for corpora that ship no dev list
    (speechocean762): dev WER then measures the training speakers' held-out
    voices, and the official test stays untouched for the final figures.

    Every wav.scp entry is checked before lhotse sees it: files must exist and
    be readable, ``cmd |`` entries must run and produce audio (they run with
    /bin/sh from the current directory, as lhotse will run them when loading).
    Relative file paths are taken from the current directory, as Kaldi does,
    and stored absolute. ``sampling_rate`` defaults to the most common rate.
    Durations come from the audio itself (so piped entries need no
    kaldi_native_io); a ``reco2dur`` that disagrees is reported in the log.
    Utterances without a speaker get their own id as the speaker (Kaldi's
    convention). The checked entries are written to a temporary data dir that
    ``lhotse.kaldi.load_kaldi_data_dir`` then reads.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    wav_scp, text_path, segments_path = data_dir / "wav.scp", data_dir / "text", data_dir / "segments"
    if not wav_scp.is_file():
        raise DataError(f"{data_dir} is not a Kaldi data dir: {wav_scp} does not exist")
    if not text_path.is_file():
        raise DataError(f"{data_dir}: {text_path} does not exist (kdasr needs transcripts)")
    problems = Problems(part)
    sources, durations, wav_line, rate = _kaldi_recordings(wav_scp, problems, sampling_rate)
    _compare_reco2dur(data_dir / "reco2dur", durations)
    if segments_path.is_file():
        utts = _kaldi_segments(segments_path, wav_scp, wav_line, durations, problems)
    else:
        utts = {rec_id: (rec_id, 0.0, dur) for rec_id, dur in durations.items()}

    texts, _ = _read_table(text_path, problems)
    speakers: dict[str, str] = {}
    if (data_dir / "utt2spk").is_file():
        speakers, _ = _read_table(data_dir / "utt2spk", problems)
    for utt in list(utts):
        if problems.has(utt):  # e.g. a duplicate line in text or utt2spk
            del utts[utt]
        elif not norm_text(texts.get(utt)):
            what = "no transcript" if utt not in texts else "empty transcript"
            problems.add(utt, EMPTY_TRANSCRIPT, f"{text_path}: {what} for utterance {utt}")
            del utts[utt]
    settle([problems], out_dir, skip_bad)
    if not utts:
        raise DataError(f"part {part!r}: no usable utterances in {data_dir}")

    with tempfile.TemporaryDirectory(prefix="kdasr_kaldi_") as tmp:
        stage = Path(tmp)
        recs = sorted({rec_id for rec_id, _, _ in utts.values()})
        _write_table(stage / "wav.scp", ((r, sources[r]) for r in recs))
        _write_table(stage / "reco2dur", ((r, repr(durations[r])) for r in recs))
        _write_table(stage / "text", ((u, norm_text(texts[u])) for u in utts))
        utt2spk = {u: speakers.get(u) or u for u in utts}
        _write_table(stage / "utt2spk", utt2spk.items())
        if segments_path.is_file():
            _write_table(stage / "segments", ((u, f"{r} {s!r} {e!r}") for u, (r, s, e) in utts.items()))
        for name, keys in (("spk2gender", set(utt2spk.values())), ("utt2lang", set(utts))):
            _copy_if_complete(data_dir / name, stage / name, keys)
        try:
            recordings, supervisions, _ = load_kaldi_data_dir(stage, sampling_rate=rate, use_reco2dur=True)
        except Exception as e:
            raise DataError(f"lhotse could not load Kaldi data dir {data_dir}: {short_error(e)}") from e
    supervisions = SupervisionSet.from_segments(fastcopy(s, text=norm_text(s.text)) for s in supervisions)
    parts = {part: (recordings, supervisions, problems)}
    if dev_speakers > 0:
        held = choose_speakers({s.speaker for s in supervisions}, dev_speakers, seed)
        dev_sups = supervisions.filter(lambda s: s.speaker in held)
        dev_recs = {s.recording_id for s in dev_sups}
        parts = {
            part: (recordings.filter(lambda r: r.id not in dev_recs),
                   supervisions.filter(lambda s: s.recording_id not in dev_recs), problems),
            dev_part: (recordings.filter(lambda r: r.id in dev_recs), dev_sups, Problems(dev_part)),
        }
        logging.info("part %s: speakers %s held out of %s (%d utterances)", dev_part, sorted(held), part, len(dev_sups))
    return write_parts(out_dir, parts)[part]


def choose_speakers(speakers: Iterable[str], num: int, seed: int) -> set[str]:
    """``num`` of ``speakers`` drawn with ``seed`` (sorted first, so the draw is reproducible)."""
    pool = sorted(set(speakers))
    if num >= len(pool):
        raise ValueError(f"cannot hold out {num} of the {len(pool)} training speakers for dev")
    return set(random.Random(seed).sample(pool, num))


def _compare_reco2dur(path: Path, durations: dict[str, float]) -> None:
    """Log recordings whose reco2dur disagrees with the audio (a stale reco2dur); the audio wins."""
    if not path.is_file():
        return
    given = load_kaldi_text_mapping(path, float_vals=True)
    off = [r for r, d in durations.items() if r in given and abs(given[r] - d) > 0.01]
    if off:
        logging.warning(
            "%s disagrees with the audio for %d recordings (e.g. %s: %.3f s in reco2dur, %.3f s in the audio); "
            "using the audio's durations", path, len(off), off[0], given[off[0]], durations[off[0]],
        )


def _copy_if_complete(src: Path, dst: Path, keys: set[str]) -> None:
    """Copy an optional Kaldi map if it covers every key (lhotse fails on a partial one)."""
    if not src.is_file():
        return
    mapping = load_kaldi_text_mapping(src)
    missing = keys - set(mapping)
    if missing:
        logging.warning("%s lacks %d of %d entries (e.g. %s); not imported", src, len(missing), len(keys), min(missing))
        return
    _write_table(dst, sorted((k, mapping[k]) for k in keys))


