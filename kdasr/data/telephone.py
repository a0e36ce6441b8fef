"""The narrowband (telephone) view: 300-3400 Hz band, 8 kHz, optional 8-bit µ-law.

Students that listen to telephone audio learn from teachers that heard the
broadband signal, so both views must describe the same utterances frame by
frame: every narrowband cut keeps its broadband cut's id, supervisions and
duration, and its audio holds exactly ``round(duration * 8000)`` samples, so
10 ms features give the same frame count in both views.
"""
from __future__ import annotations

import functools
import logging
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.signal
import soundfile as sf
import torch
import torchaudio.functional as AF
import torchaudio.transforms as T
from lhotse import CutSet, MonoCut, Recording
from lhotse.audio import AudioSource
from lhotse.utils import compute_num_samples, fastcopy
from tqdm import tqdm

from kdasr.data.errors import DataError
from kdasr.utils.io import Pathlike, atomic_path, save_manifest

log = logging.getLogger(__name__)

FILTER_ORDER = 8  # Butterworth order per band edge; sosfiltfilt doubles the slope.
MU_LAW_CHANNELS = 256  # 8-bit G.711-style companding


class NarrowbandError(DataError):
    """A cut whose audio cannot be read or turned into the narrowband view."""


@functools.lru_cache(maxsize=16)
def _resampler(orig_rate: int, new_rate: int) -> T.Resample:
    # torchaudio.functional.resample rebuilds its sinc kernel on every call; the
    # transform builds it once, which matters for thousands of short utterances.
    return T.Resample(orig_rate, new_rate)


def resample(samples: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Band-limited resampling of a 1-D float signal (torchaudio's sinc interpolation)."""
    if orig_rate == new_rate:
        return np.asarray(samples, dtype=np.float32)
    x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    with torch.no_grad():
        return _resampler(int(orig_rate), int(new_rate))(x).numpy()


@functools.lru_cache(maxsize=16)
def _bandpass(sampling_rate: int, low: float, high: float, order: int) -> np.ndarray:
    return scipy.signal.butter(order, [low, high], btype="bandpass", fs=sampling_rate, output="sos")


def telephone_channel(
    samples: np.ndarray,
    sampling_rate: int = 16000,
    target_rate: int = 8000,
    low: float = 300.0,
    high: float = 3400.0,
    mu_law: bool = False,
) -> np.ndarray:
    """Pass a mono signal through a telephone channel; returns float32 at ``target_rate``.

    Zero-phase Butterworth band-pass (no group delay, so word timings stay
    aligned with the broadband view), band-limited resampling, then
    optionally an 8-bit µ-law encode/decode round trip (G.711 quantization
    noise).
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"telephone_channel expects a 1-D signal, got shape {x.shape}")
    if not 0 < low < high < min(sampling_rate, target_rate) / 2:
        raise ValueError(
            f"band {low}-{high} Hz must lie inside 0-{min(sampling_rate, target_rate) / 2} Hz "
            f"(sampling rate {sampling_rate}, target rate {target_rate})"
        )
    if x.size == 0:
        return np.zeros(0, dtype=np.float32)
    sos = _bandpass(int(sampling_rate), float(low), float(high), FILTER_ORDER)
    # sosfiltfilt pads the edges; very short signals cannot take the default padding.
    padlen = min(3 * (2 * len(sos) + 1), x.size - 1)
    y = scipy.signal.sosfiltfilt(sos, x, padlen=padlen).astype(np.float32)
    y = resample(y, sampling_rate, target_rate)
    if mu_law:
        t = torch.from_numpy(np.clip(y, -1.0, 1.0))
        y = AF.mu_law_decoding(AF.mu_law_encoding(t, MU_LAW_CHANNELS), MU_LAW_CHANNELS).numpy()
    return y.astype(np.float32, copy=False)


def _fit_length(samples: np.ndarray, num_samples: int) -> np.ndarray:
    """Trim or zero-pad to ``num_samples`` (the resampler rounds lengths up)."""
    if samples.size >= num_samples:
        return samples[:num_samples]
    return np.pad(samples, (0, num_samples - samples.size))


def _source_names(cut) -> str:
    rec = getattr(cut, "recording", None)
    if rec is None:
        return "<no recording>"
    return ", ".join(str(s.source) for s in rec.sources)


def _narrowband_one(args: tuple) -> tuple[dict, int]:
    """Write one cut's 8 kHz audio; returns the new cut (as a dict) and its channel count."""
    cut, out_dir, mu_law, target_rate = args
    if not cut.has_recording:
        raise NarrowbandError(f"cut {cut.id} has no recording to take audio from")
    try:
        audio = cut.load_audio()
    except Exception as e:
        raise NarrowbandError(f"cut {cut.id}: cannot read audio from {_source_names(cut)}: {e}") from e
    audio = np.atleast_2d(audio)
    num_channels = audio.shape[0]
    num_samples = compute_num_samples(cut.duration, target_rate)
    try:
        y = telephone_channel(audio[0], cut.sampling_rate, target_rate, mu_law=mu_law)
    except ValueError as e:
        raise NarrowbandError(f"cut {cut.id} ({_source_names(cut)}): {e}") from e
    y = np.clip(_fit_length(y, num_samples), -1.0, 1.0)
    path = Path(out_dir) / f"{cut.id}.flac"
    with atomic_path(path) as tmp:
        sf.write(tmp, y, target_rate, subtype="PCM_16", format="FLAC")
    recording = Recording(
        id=cut.id,
        sources=[AudioSource(type="file", channels=[0], source=str(path))],
        sampling_rate=target_rate,
        num_samples=num_samples,
        duration=num_samples / target_rate,
    )
    supervisions = [fastcopy(s, recording_id=cut.id, channel=0) for s in cut.supervisions]
    nb = MonoCut(
        id=cut.id,
        start=0.0,
        duration=cut.duration,
        channel=0,
        recording=recording,
        supervisions=supervisions,
        custom=dict(cut.custom) if getattr(cut, "custom", None) else None,
    )
    return nb.to_dict(), num_channels


def _init_worker() -> None:
    # Worker processes run one small signal each; intra-op threads only contend.
    torch.set_num_threads(1)


def make_narrowband(
    cuts: CutSet,
    out_dir: Pathlike,
    mu_law: bool = False,
    num_jobs: int = 1,
    target_rate: int = 8000,
) -> CutSet:
    """Write ``out_dir/<cut_id>.flac`` at ``target_rate`` for every cut; return the narrowband cuts.

    The returned cuts keep ids, durations, supervisions (text, speaker,
    custom fields) and cut custom fields; they carry no features (those
    belong to the broadband audio). A multi-channel cut contributes channel 0.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cut_list = list(cuts)
    jobs = ((c, out_dir, mu_law, target_rate) for c in cut_list)
    results: list[tuple[dict, int]] = []
    progress = dict(total=len(cut_list), desc=f"narrowband {out_dir.name}", unit="cut")
    if num_jobs <= 1:
        results = [_narrowband_one(j) for j in tqdm(jobs, **progress)]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(num_jobs, mp_context=ctx, initializer=_init_worker) as pool:
            results = list(tqdm(pool.map(_narrowband_one, jobs, chunksize=16), **progress))
    multi = [d["id"] for d, n in results if n > 1]
    if multi:
        log.info(
            "%d cut(s) have more than one channel; the narrowband view uses channel 0 (e.g. %s)",
            len(multi), ", ".join(multi[:5]),
        )
    return CutSet.from_dicts(d for d, _ in results)


def prepare_narrowband(
    manifest_dir: Pathlike,
    parts: Sequence[str] = ("train", "dev", "test"),
    out_dir: Pathlike = "data/narrowband",
    mu_law: bool = False,
    num_jobs: int = 1,
) -> dict[str, CutSet]:
    """For each part read ``cuts_<part>.jsonl.gz``, write ``out_dir/<part>/*.flac`` and ``cuts_<part>_nb.jsonl.gz``."""
    manifest_dir, out_dir = Path(manifest_dir), Path(out_dir)
    missing = [str(manifest_dir / f"cuts_{p}.jsonl.gz") for p in parts if not (manifest_dir / f"cuts_{p}.jsonl.gz").is_file()]
    if missing:
        raise NarrowbandError(f"missing broadband cut manifest(s): {', '.join(missing)}")
    result: dict[str, CutSet] = {}
    for part in parts:
        cuts = CutSet.from_file(manifest_dir / f"cuts_{part}.jsonl.gz")
        nb = make_narrowband(cuts, out_dir / part, mu_law=mu_law, num_jobs=num_jobs)
        target = manifest_dir / f"cuts_{part}_nb.jsonl.gz"
        save_manifest(nb, target)
        log.info("narrowband %s: %d cuts -> %s (audio in %s, mu_law=%s)", part, len(nb), target, out_dir / part, mu_law)
        result[part] = nb
    return result

