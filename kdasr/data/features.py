"""Log-mel filterbank features, broadband/narrowband frame sync, and global CMVN.

Features are kaldi-native-fbank's (:mod:`kdasr.data.knf_fbank`), the library
sherpa-onnx computes them with at deployment, so a shipped model sees the
features it was trained on. They are stored with lilcom at ``tick_power``
-8 (error at most 2**-9 = 0.002): lilcom's default -5 (error up to 0.016)
changed the greedy output of 1 of the demo's 300 test utterances against
uncompressed features; -8 changed none, for 11.7 instead of 8.7 bits per
value. A 10 ms shift and ``snip_edges=False`` make
a cut's frame count follow from its duration alone
(``lhotse.utils.compute_num_frames``). That is what lets the 16 kHz (``wb``)
and 8 kHz (``nb``) views of a cut share frames, and hence share soft labels.
Resampling rounds sample counts, though, so an 8 kHz cut can end half a 16 kHz
sample away from its broadband twin and get one frame more;
:func:`align_durations` puts each narrowband cut on the broadband cut's length
before extraction, and :func:`check_frame_sync` verifies the result.
"""
from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import re
import shutil
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
from lhotse import CutSet, LilcomChunkyWriter, load_manifest_lazy
from lhotse.cut import Cut
from lhotse.utils import compute_num_samples, fastcopy
from tqdm import tqdm

from kdasr.data.errors import DataError
from kdasr.data.knf_fbank import KnfFbank, KnfFbankConfig
from kdasr.utils.io import Pathlike, atomic_write_text, replace_dir, save_manifest

FRAME_SHIFT = 0.01
NB_MAX_RATE = 8000  # rates up to this count as narrowband (telephone) audio
_MAX_LISTED = 5  # cut ids named in an error message

log = logging.getLogger(__name__)


class FeatureError(DataError, ValueError):
    """Cuts whose features cannot be computed, stored or trusted."""


class FrameSyncError(FeatureError):
    """The two views of some cuts do not have the same ids or the same number of frames."""


def default_num_mel_bins(sampling_rate: int) -> int:
    """40 mel bins for narrowband audio (a 4 kHz band), 80 for broadband."""
    return 40 if sampling_rate <= NB_MAX_RATE else 80


def fbank_extractor(sampling_rate: int, num_mel_bins: Optional[int] = None) -> KnfFbank:
    """The one fbank configuration kdasr uses for audio at ``sampling_rate`` (training and deployment).

    Every other option is what sherpa-onnx sets when it is told only the
    sample rate and feature dimension, which is all its C API (and hence its
    Android, iOS, WebAssembly... bindings) lets a user set: mel bins from
    20 Hz to Nyquist - 400 Hz, no dither.
    """
    return KnfFbank(
        KnfFbankConfig(
            sampling_rate=sampling_rate,
            num_mel_bins=num_mel_bins or default_num_mel_bins(sampling_rate),
            frame_shift=FRAME_SHIFT,
            snip_edges=False,
            low_freq=20.0,
            high_freq=-400.0,
            dither=0.0,
        )
    )


#: lilcom's quantization step is 2**TICK_POWER in log-mel units (see the module notes)
TICK_POWER = -8


class FeatureWriter(LilcomChunkyWriter):
    """``LilcomChunkyWriter`` at :data:`TICK_POWER`; read back by lhotse's ``lilcom_chunky`` reader."""

    def __init__(self, storage_path: Pathlike, tick_power: int = TICK_POWER, mode: str = "wb") -> None:
        super().__init__(storage_path, tick_power=tick_power, mode=mode)


def _as_cutset(cuts: Union[CutSet, Pathlike]) -> CutSet:
    if isinstance(cuts, CutSet):
        return cuts
    path = Path(cuts)
    if not path.is_file():
        raise FeatureError(f"cut manifest {path} does not exist")
    return load_manifest_lazy(path)


def _listing(ids: list[str]) -> str:
    more = f" and {len(ids) - _MAX_LISTED} more" if len(ids) > _MAX_LISTED else ""
    return ", ".join(ids[:_MAX_LISTED]) + more


def _single_thread_worker() -> None:
    """Extraction workers use one thread each so N jobs do not oversubscribe N cores."""
    torch.set_num_threads(1)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_tmp(storage_dir: Path) -> None:
    """Delete temp (and replaced) storage dirs left by killed runs (their pid is gone)."""
    pattern = re.compile(rf"^\.{re.escape(storage_dir.name)}\.(?:tmp|old)-(\d+)$")
    if not storage_dir.parent.is_dir():
        return
    for p in storage_dir.parent.iterdir():
        m = pattern.match(p.name)
        if m and p.is_dir() and not _pid_alive(int(m.group(1))):
            log.info("removing %s left by an interrupted run", p)
            shutil.rmtree(p, ignore_errors=True)


def compute_fbank(
    cuts: Union[CutSet, Pathlike],
    storage_dir: Pathlike,
    manifest_path: Optional[Pathlike] = None,
    num_mel_bins: Optional[int] = None,
    num_jobs: int = 1,
    overwrite: bool = False,
    progress_bar: bool = True,
) -> CutSet:
    """Extract fbank features of ``cuts`` into ``storage_dir`` (lilcom chunky archives, :class:`FeatureWriter`).

    Returns the cuts with features attached, in input order, and writes them
    to ``manifest_path`` when given. Arrays are written to a temporary sibling
    of ``storage_dir`` that is renamed into place only once every cut
    succeeded, then the manifest is written atomically: an existing manifest
    therefore means finished work, and is reused unless ``overwrite``.
    ``num_mel_bins`` defaults by sampling rate (:func:`default_num_mel_bins`).
    """
    storage_dir = Path(storage_dir)
    if manifest_path is not None and Path(manifest_path).is_file() and not overwrite:
        if storage_dir.is_dir():
            log.info("%s exists, skipping feature extraction (overwrite to redo)", manifest_path)
            done = CutSet.from_file(manifest_path)
            first = next(iter(done), None)
            if num_mel_bins and first is not None and first.num_features != num_mel_bins:
                raise FeatureError(
                    f"{manifest_path} holds {first.num_features}-dim features, not the {num_mel_bins} "
                    "asked for: overwrite it to extract again"
                )
            if first is not None and first.features is not None and first.features.type != KnfFbank.name:
                log.warning("%s holds %s features, not %s (what sherpa-onnx computes at deployment): extract "
                            "again with overwrite (--overwrite) for models that ship", manifest_path,
                            first.features.type, KnfFbank.name)
            return done
        log.warning("%s exists but its storage %s does not: extracting again", manifest_path, storage_dir)
    if num_jobs < 1:
        raise FeatureError(f"num_jobs must be at least 1, got {num_jobs}")

    source = _as_cutset(cuts)
    cut_list = list(source)
    if not cut_list:
        raise FeatureError("no cuts to extract features from")
    ids = [c.id for c in cut_list]
    if len(set(ids)) != len(ids):
        dups = sorted(i for i, n in Counter(ids).items() if n > 1)
        raise FeatureError(f"duplicate cut ids: {_listing(dups)}")
    rates = {c.sampling_rate for c in cut_list}
    if len(rates) != 1:
        example: dict[int, str] = {}
        for c in cut_list:
            example.setdefault(c.sampling_rate, c.id)
        raise FeatureError(
            "cuts mix sampling rates "
            + ", ".join(f"{r} Hz (e.g. {cid})" for r, cid in sorted(example.items()))
            + ": extract each rate separately"
        )
    rate = rates.pop()
    extractor = fbank_extractor(rate, num_mel_bins)
    dim = extractor.feature_dim(rate)
    total = sum(c.duration for c in cut_list)
    log.info(
        "extracting %d-dim fbank of %d cuts (%.2f h, %d Hz) with %d job(s) -> %s",
        dim, len(cut_list), total / 3600, rate, num_jobs, storage_dir,
    )

    _remove_stale_tmp(storage_dir)
    tmp_dir = storage_dir.parent / f".{storage_dir.name}.tmp-{os.getpid()}"
    if tmp_dir.exists():
        shutil.rmtree(tmp_dir)
    tmp_dir.mkdir(parents=True)
    try:
        jobs = min(num_jobs, len(cut_list))
        with_feats = _extract(CutSet.from_cuts(cut_list), extractor, tmp_dir, jobs, progress_bar)
        by_id = {c.id: c for c in with_feats}
        dropped = [i for i in ids if i not in by_id]
        if dropped:
            raise FeatureError(
                f"audio of {len(dropped)} cut(s) could not be loaded (see the warnings above): {_listing(dropped)}"
            )
        out = CutSet.from_cuts([_move_storage(by_id[i], tmp_dir, storage_dir) for i in ids])
        replace_dir(tmp_dir, storage_dir)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)

    if manifest_path is not None:
        save_manifest(out, manifest_path)
        log.info("wrote %s", manifest_path)
    return out


def _extract(cuts: CutSet, extractor: KnfFbank, tmp_dir: Path, num_jobs: int, progress_bar: bool) -> CutSet:
    """Run lhotse's extraction; archives land in ``tmp_dir/feats-<i>.lca`` for either job count."""
    if num_jobs == 1:
        return cuts.compute_and_store_features(
            extractor=extractor,
            storage_path=tmp_dir / "feats-0",
            num_jobs=1,
            storage_type=FeatureWriter,
            progress_bar=progress_bar,
        )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the parent only waits; keeps lhotse's oversubscription warning quiet
    try:
        with ProcessPoolExecutor(
            num_jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_single_thread_worker
        ) as executor:
            return cuts.compute_and_store_features(
                extractor=extractor,
                storage_path=tmp_dir,
                num_jobs=num_jobs,
                storage_type=FeatureWriter,
                executor=executor,
                progress_bar=progress_bar,
            )
    finally:
        torch.set_num_threads(threads)


def _move_storage(cut: Cut, tmp_dir: Path, storage_dir: Path) -> Cut:
    """Point a cut's features at the renamed storage dir."""
    path = Path(cut.features.storage_path)
    if path.parent != tmp_dir:
        raise FeatureError(f"cut {cut.id}: features stored at unexpected path {path}")
    return fastcopy(cut, features=fastcopy(cut.features, storage_path=str(storage_dir / path.name)))


def align_durations(cuts: Union[CutSet, Pathlike], reference: Union[CutSet, Pathlike]) -> CutSet:
    """Give each cut the duration of the reference cut with the same id, on its own sample grid.

    Used for the narrowband view with the broadband cuts as reference: the
    new duration is the broadband sample count scaled to the narrowband rate
    and rounded down (``N_nb = floor(N_wb * sr_nb / sr_wb)``). For 16 -> 8 kHz
    this gives both views the same frame count for every length, whereas the
    rounding a resampler does can add a frame when ``N_wb`` is odd. A
    supervision that reached the end of the cut is moved with it.
    """
    ref = {c.id: c for c in _as_cutset(reference)}
    out = []
    missing: list[str] = []
    short: list[str] = []
    for cut in _as_cutset(cuts):
        r = ref.get(cut.id)
        if r is None:
            missing.append(cut.id)
            continue
        n_ref = compute_num_samples(r.duration, r.sampling_rate)
        n = n_ref * cut.sampling_rate // r.sampling_rate
        if cut.has_recording:
            available = cut.recording.num_samples - compute_num_samples(cut.start, cut.sampling_rate)
            if n > available:
                short.append(f"{cut.id} (needs {n} samples, recording has {available})")
                continue
        duration = n / cut.sampling_rate
        if compute_num_samples(cut.duration, cut.sampling_rate) != n:
            sups = []
            for s in cut.supervisions:
                if abs(s.end - cut.duration) < 1e-6 or s.end > duration:
                    s = fastcopy(s, duration=round(duration - s.start, 8))
                sups.append(s)
            cut = fastcopy(cut, duration=duration, supervisions=sups)
        out.append(cut)
    if missing:
        raise FrameSyncError(f"{len(missing)} cut(s) have no reference cut with the same id: {_listing(missing)}")
    if short:
        raise FrameSyncError(f"{len(short)} cut(s) have less audio than their reference: {_listing(short)}")
    return CutSet.from_cuts(out)


def check_frame_sync(wb_cuts: Union[CutSet, Pathlike], nb_cuts: Union[CutSet, Pathlike]) -> None:
    """Raise :class:`FrameSyncError` unless both views have the same cut ids and frame counts."""
    wb = {c.id: c.num_frames for c in _as_cutset(wb_cuts)}
    nb = {c.id: c.num_frames for c in _as_cutset(nb_cuts)}
    problems = []
    only_wb = [i for i in wb if i not in nb]
    only_nb = [i for i in nb if i not in wb]
    if only_wb:
        problems.append(f"{len(only_wb)} cut(s) only in the wb view: {_listing(only_wb)}")
    if only_nb:
        problems.append(f"{len(only_nb)} cut(s) only in the nb view: {_listing(only_nb)}")
    no_feats = [i for i, n in list(wb.items()) + list(nb.items()) if n is None]
    if no_feats:
        problems.append(f"{len(no_feats)} cut(s) without features: {_listing(no_feats)}")
    differ = [f"{i} (wb {wb[i]}, nb {nb[i]})" for i in wb if i in nb and None not in (wb[i], nb[i]) and wb[i] != nb[i]]
    if differ:
        problems.append(f"{len(differ)} of {len(wb)} cut(s) differ in frame count: {_listing(differ)}")
    if problems:
        raise FrameSyncError("broadband and narrowband features are out of sync: " + "; ".join(problems))


def compute_cmvn(cuts: Union[CutSet, Pathlike], progress_bar: bool = True) -> dict:
    """Global per-dimension mean and standard deviation over all frames of ``cuts``.

    Streams cut by cut with float64 sums, so the statistics of a large
    training set need memory for one cut only.
    """
    total: Optional[np.ndarray] = None
    total_sq: Optional[np.ndarray] = None
    num_frames = 0
    cuts = _as_cutset(cuts)
    for cut in tqdm(cuts, desc="CMVN statistics", disable=not progress_bar):
        if not cut.has_features:
            raise FeatureError(f"cut {cut.id} has no features: run compute_fbank first")
        feats = cut.load_features().astype(np.float64)
        if total is None:
            total = np.zeros(feats.shape[1])
            total_sq = np.zeros(feats.shape[1])
        elif feats.shape[1] != total.shape[0]:
            raise FeatureError(f"cut {cut.id} has {feats.shape[1]} features, earlier cuts {total.shape[0]}")
        total += feats.sum(axis=0)
        total_sq += np.square(feats).sum(axis=0)  # type: ignore[operator]
        num_frames += feats.shape[0]
    if total is None or num_frames == 0:
        raise FeatureError("no feature frames to compute CMVN statistics from")
    mean = total / num_frames
    var = np.maximum(total_sq / num_frames - mean**2, 1e-10)  # type: ignore[operator]
    return {"mean": mean.tolist(), "std": np.sqrt(var).tolist(), "num_frames": int(num_frames)}


def save_cmvn(stats: dict, path: Pathlike) -> None:
    """Write CMVN statistics as JSON (atomically)."""
    _check_cmvn(stats, str(path))
    atomic_write_text(path, json.dumps(stats, indent=1) + "\n")


def load_cmvn(path: Pathlike) -> dict:
    """Read statistics written by :func:`save_cmvn`: ``mean``, ``std`` (lists) and ``num_frames``."""
    path = Path(path)
    if not path.is_file():
        raise FeatureError(f"CMVN file {path} does not exist: run `kdasr prepare fbank` first")
    try:
        stats = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FeatureError(f"CMVN file {path} is not valid JSON: {e}") from e
    _check_cmvn(stats, str(path))
    return stats


def _check_cmvn(stats: object, where: str) -> None:
    if not isinstance(stats, dict) or not {"mean", "std", "num_frames"} <= set(stats):
        raise FeatureError(f"CMVN statistics {where} need keys mean, std and num_frames")
    mean, std = stats["mean"], stats["std"]
    if not isinstance(mean, list) or not isinstance(std, list) or len(mean) != len(std) or not mean:
        raise FeatureError(f"CMVN statistics {where}: mean and std must be lists of equal, non-zero length")
    if not all(isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in std):
        raise FeatureError(f"CMVN statistics {where}: std must be finite and positive")
    if not all(isinstance(m, (int, float)) and math.isfinite(m) for m in mean):
        raise FeatureError(f"CMVN statistics {where}: mean must be finite")


VIEWS = ("wb", "nb")


def source_manifest(manifest_dir: Pathlike, part: str, view: str) -> Path:
    """Input cuts of a view: ``cuts_<part>.jsonl.gz`` (wb) or ``cuts_<part>_nb.jsonl.gz`` (nb)."""
    if view not in VIEWS:
        raise FeatureError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    return Path(manifest_dir) / (f"cuts_{part}.jsonl.gz" if view == "wb" else f"cuts_{part}_nb.jsonl.gz")


def fbank_manifest(out_dir: Pathlike, part: str, view: str) -> Path:
    """Output cuts with features: ``<out_dir>/cuts_<part>_<view>.jsonl.gz``."""
    return Path(out_dir) / f"cuts_{part}_{view}.jsonl.gz"


def cmvn_file(out_dir: Pathlike, view: str) -> Path:
    """Global CMVN statistics of a view: ``<out_dir>/cmvn_<view>.json``."""
    return Path(out_dir) / f"cmvn_{view}.json"


def prepare_fbank(
    manifest_dir: Pathlike,
    out_dir: Pathlike,
    parts: list[str],
    views: list[str],
    num_jobs: int = 1,
    num_mel_bins: Optional[int] = None,
    cmvn_part: str = "train",
    overwrite: bool = False,
) -> list[Path]:
    """Features of every part and view, CMVN of each view, and the wb/nb frame-sync check.

    The nb cuts are first aligned to the wb cuts of the same part
    (:func:`align_durations`) when those exist. CMVN comes from ``cmvn_part``
    and is recomputed whenever that part's features are. Returns the
    manifests written or kept.
    """
    manifest_dir, out_dir = Path(manifest_dir), Path(out_dir)
    written = []
    for view in views:
        cmvn_path = cmvn_file(out_dir, view)
        cmvn_stale = not cmvn_path.is_file()
        for part in parts:
            src = source_manifest(manifest_dir, part, view)
            if not src.is_file():
                hint = " (run `kdasr prepare narrowband` first)" if view == "nb" else ""
                raise FeatureError(f"input manifest {src} does not exist{hint}")
            out = fbank_manifest(out_dir, part, view)
            todo = overwrite or not out.is_file() or not (out_dir / f"{part}_{view}").is_dir()
            cuts: Union[CutSet, Path] = src
            if todo and view == "nb":
                ref = source_manifest(manifest_dir, part, "wb")
                if ref.is_file():
                    cuts = align_durations(src, ref)
                else:
                    log.warning("%s does not exist: nb durations are not aligned to wb", ref)
            compute_fbank(cuts, out_dir / f"{part}_{view}", out, num_mel_bins, num_jobs, overwrite=overwrite)
            written.append(out)
            if todo and part == cmvn_part:
                cmvn_stale = True
        if cmvn_stale:
            src = fbank_manifest(out_dir, cmvn_part, view)
            if not src.is_file():
                raise FeatureError(
                    f"CMVN needs the features of part {cmvn_part!r} ({src}): add it to the parts or pick another"
                )
            stats = compute_cmvn(src)
            save_cmvn(stats, cmvn_path)
            log.info("wrote %s (%d frames of %s)", cmvn_path, stats["num_frames"], cmvn_part)
    for part in parts:
        wb, nb = fbank_manifest(out_dir, part, "wb"), fbank_manifest(out_dir, part, "nb")
        if wb.is_file() and nb.is_file():
            check_frame_sync(wb, nb)
            log.info("part %s: wb and nb features are in frame sync", part)
    return written
