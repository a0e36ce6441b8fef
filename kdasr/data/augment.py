"""Data augmentation for every model: speed copies, gain, noise, reverberation, SpecAugment.

Speed perturbation is done once, before features (:func:`prepare_speed`):
lhotse's ``perturb_speed`` adds copies ``<id>_sp0.9`` / ``<id>_sp1.1`` that
every later stage (narrowband view, fbank, soft labels) treats as cuts of
their own. Precomputed rather than on the fly because each copy then has its
own frames under its own id: a teacher labels every copy in its archive and
archive KD stays frame-exact, and no step pays for re-extracting features.

The rest run on each training batch (:class:`Augmenter`, config section
``data.augment``), with random choices drawn from (seed, epoch, cut id) so a
cut gets the same perturbation whatever the batch, worker or resume:

- ``volume``: a gain in dB. A gain of g dB adds g·ln(10)/10 to every log-mel
  energy, so it is applied to the stored features (exact above the log floor)
  instead of re-extracting them.
- ``noise``: additive noise at an SNR drawn from a range, from a directory of
  recordings (MUSAN-like, searched recursively) or ``demo`` (the demo corpus's
  white/pink/car noise generator). ``reverb``: a room impulse response from a
  directory (lhotse ``reverb_rir``). Both work on the audio, so the features of
  those cuts are recomputed with the fbank configuration of ``prepare fbank``.
- ``specaugment``: lhotse's SpecAugment (masks, and time warp when
  ``time_warp_factor`` >= 1).

Every augmentation declares ``moves_frames`` (:data:`AUGMENTATIONS`): whether the student's frames
stop lining up with a teacher's archived frames (time warp: yes; gain, noise,
reverberation, masks and precomputed speed copies: no).
"""
from __future__ import annotations

import copy
import logging
import math
import random
import zlib
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch
from lhotse import CutSet, Recording
from lhotse.cut import Cut
from lhotse.dataset import SpecAugment
from lhotse.dataset.collation import collate_features
from lhotse.utils import LOG_EPSILON

from kdasr.config import ConfigError
from kdasr.data.demo import SAMPLING_RATE as DEMO_RATE
from kdasr.data.demo import make_noise
from kdasr.data.errors import DataError
from kdasr.data.features import fbank_extractor, source_manifest
from kdasr.data.telephone import resample
from kdasr.utils.io import Pathlike, save_manifest

log = logging.getLogger(__name__)

SPEED_FACTORS = (0.9, 1.0, 1.1)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".sph")
DEMO_NOISE = ("white", "pink", "car")
#: log-mel value of a frame with no energy (kaldi's floor); a negative gain cannot go below it
_FEATURE_FLOOR = math.log(np.finfo(np.float32).eps)

#: data.augment: every section and key it may hold, with its default
AUGMENT_DEFAULTS: dict[str, dict[str, Any]] = {
    "volume": {"enabled": False, "min_db": -20.0, "max_db": 20.0, "p": 1.0},
    "noise": {"enabled": False, "dir": None, "snr": [5.0, 25.0], "p": 0.5},
    "reverb": {"enabled": False, "dir": None, "p": 0.3},
    "specaugment": {
        "enabled": True,
        "time_warp_factor": 0,
        "num_feature_masks": 2,
        "features_mask_size": 15,
        "num_frame_masks": 2,
        "frames_mask_size": 20,
        "max_frames_mask_fraction": 0.15,
        "p": 0.9,
    },
}


class AugmentError(DataError, ValueError):
    """A noise/RIR set or an augmentation option that cannot be used; the message names the file or key."""


# --------------------------------------------------------------------------- speed copies
def speed_copies(cuts: Iterable[Cut], factors: Sequence[float] = SPEED_FACTORS) -> CutSet:
    """Each cut once per factor: factor 1 is the cut itself, others lhotse's ``<id>_sp<f>`` copy.

    Copies carry ``custom['speed']`` so a rerun recognizes them and starts
    from the originals again (the result does not depend on how often it ran).
    """
    bad = [f for f in factors if not 0.5 <= float(f) <= 2.0]
    if bad or not factors:
        raise AugmentError(f"speed factors must lie in [0.5, 2], got {list(factors)}")
    out = []
    for cut in cuts:
        if (cut.custom or {}).get("speed") is not None:
            continue
        for f in factors:
            if float(f) == 1.0:
                out.append(cut)
                continue
            # (lhotse drops a perturbed cut's features in place: work on a copy without them)
            sp = cut.drop_features().perturb_speed(float(f), affix_id=True)
            sp.custom = {**(cut.custom or {}), "speed": float(f)}
            out.append(sp)
    return CutSet.from_cuts(out)


def only_speeds(cuts: Iterable[Cut], speeds: Sequence[float], where: Pathlike = "the training cuts") -> CutSet:
    """The cuts of the listed speed factors (1.0: the originals), for a run that trains without some copies
    of a manifest made by :func:`prepare_speed` (an archive without speed perturbation, a quick baseline)."""
    if not speeds or any(isinstance(f, bool) or not isinstance(f, (int, float)) for f in speeds):
        raise AugmentError(f"data.speeds must be a list of speed factors such as [1.0], got {speeds!r}")
    wanted = {float(f) for f in speeds}
    kept, present = [], set()
    for cut in cuts:
        speed = float((cut.custom or {}).get("speed") or 1.0)
        present.add(speed)
        if speed in wanted:
            kept.append(cut)
    if not kept:
        raise AugmentError(f"data.speeds {sorted(wanted)}: {where} holds none of them (its speeds: {sorted(present)})")
    log.info("data.speeds %s: %d of the cuts of %s", sorted(wanted), len(kept), where)
    return CutSet.from_cuts(kept)


def prepare_speed(
    manifest_dir: Pathlike, part: str, factors: Sequence[float] = SPEED_FACTORS, view: str = "wb"
) -> Path:
    """Rewrite a part's source cuts (``cuts_<part>.jsonl.gz``; ``cuts_<part>_nb.jsonl.gz`` for a
    corpus's own 8 kHz copy) with its speed copies added."""
    path = source_manifest(manifest_dir, part, view)
    if not path.is_file():
        raise AugmentError(f"speed perturbation needs {path}: import part {part!r} first")
    cuts = speed_copies(CutSet.from_file(path), factors)
    save_manifest(cuts, path)
    log.info("speed perturbation %s: %d cuts (factors %s) -> %s", part, len(cuts), list(factors), path)
    return path


# --------------------------------------------------------------------------- config
def augment_config(cfg: Optional[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``data.augment`` merged over :data:`AUGMENT_DEFAULTS`; unknown sections/keys are a ConfigError."""
    cfg = cfg or {}
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"data.augment must be a mapping of sections, got {cfg!r}")
    out = {name: dict(opts) for name, opts in AUGMENT_DEFAULTS.items()}
    for name, opts in cfg.items():
        if name not in AUGMENT_DEFAULTS:
            raise ConfigError(f"data.augment.{name}: unknown augmentation; known: {', '.join(AUGMENT_DEFAULTS)}")
        if not isinstance(opts, Mapping):
            raise ConfigError(f"data.augment.{name} must be a section (e.g. {{enabled: true}}), got {opts!r}")
        for key, value in opts.items():
            if key not in AUGMENT_DEFAULTS[name]:
                raise ConfigError(
                    f"data.augment.{name}.{key}: unknown key; {name} takes {', '.join(AUGMENT_DEFAULTS[name])}"
                )
            out[name][key] = value
    return out


def _number(cfg: Mapping, name: str, key: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise ConfigError(f"data.augment.{name}.{key} must be a number in [{lo}, {hi}], got {value!r}")
    return float(value)


def _range(cfg: Mapping, name: str, key: str) -> tuple[float, float]:
    value = cfg[key]
    if (not isinstance(value, Sequence) or len(value) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value) or value[0] > value[1]):
        raise ConfigError(f"data.augment.{name}.{key} must be [low, high], got {value!r}")
    return float(value[0]), float(value[1])


def _rng(seed: int, epoch: int, cut_id: str, name: str) -> np.random.Generator:
    """The random stream of one augmentation of one cut in one epoch."""
    return np.random.default_rng([seed, epoch, zlib.crc32(f"{name}:{cut_id}".encode())])


# --------------------------------------------------------------------------- audio sets
def audio_files(directory: Pathlike, what: str) -> list[Path]:
    """The audio files under ``directory`` (recursive, sorted); an empty or missing one is an error."""
    d = Path(directory)
    if not d.is_dir():
        raise AugmentError(f"{what} directory {d} does not exist")
    files = sorted(p for p in d.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise AugmentError(f"{what} directory {d} holds no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return files


def load_audio_set(directory: Pathlike, what: str, sampling_rate: int) -> list[Recording]:
    """Every recording of a noise/RIR directory, checked readable and at ``sampling_rate``."""
    recs = []
    for path in audio_files(directory, what):
        try:
            rec = Recording.from_file(path)
        except Exception as e:  # any backend error: name the file
            raise AugmentError(f"{what} file {path} cannot be read: {e}") from e
        if rec.num_samples == 0:
            raise AugmentError(f"{what} file {path} is empty")
        if rec.sampling_rate != sampling_rate:
            raise AugmentError(
                f"{what} file {path} is at {rec.sampling_rate} Hz but the training audio at {sampling_rate} Hz "
                f"(resample the {what} set to {sampling_rate} Hz)"
            )
        recs.append(rec)
    return recs


# --------------------------------------------------------------------------- augmentations
class Augmentation:
    """One section of ``data.augment``; it declares whether its options move frames."""

    name = ""

    @staticmethod
    def moves_frames(opts: Mapping[str, Any]) -> Optional[str]:
        """The setting by which ``opts`` move frames (what archive KD must refuse), or None.

        Gain, noise and reverberation keep every frame where it was.
        """
        return None


class Volume(Augmentation):
    """Random gain of the whole recording chain, applied to log-mel features."""

    name = "volume"

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.low, self.high = _number(cfg, "volume", "min_db"), _number(cfg, "volume", "max_db")
        if self.low > self.high:
            raise ConfigError(f"data.augment.volume: min_db {self.low} is above max_db {self.high}")
        self.p = _number(cfg, "volume", "p", 0.0, 1.0)

    def gain_db(self, rng: np.random.Generator) -> float:
        return float(rng.uniform(self.low, self.high)) if rng.random() < self.p else 0.0

    @staticmethod
    def apply(feats: np.ndarray, gain_db: float) -> np.ndarray:
        """Log-mel energies of the audio scaled by ``gain_db`` (power x 10^(g/10))."""
        if gain_db == 0.0:
            return feats
        return np.maximum(feats + gain_db * math.log(10.0) / 10.0, _FEATURE_FLOOR).astype(feats.dtype)


class Noise(Augmentation):
    """Additive noise at a random SNR from recordings on disk or the demo's generator."""

    name = "noise"

    def __init__(self, cfg: Mapping[str, Any], sampling_rate: int) -> None:
        self.snr = _range(cfg, "noise", "snr")
        self.p = _number(cfg, "noise", "p", 0.0, 1.0)
        self.sampling_rate = sampling_rate
        if not cfg.get("dir"):
            raise ConfigError("data.augment.noise.dir is required: a directory of noise recordings, or 'demo'")
        self.generated = str(cfg["dir"]) == "demo"
        self.recordings = [] if self.generated else load_audio_set(cfg["dir"], "noise", sampling_rate)
        log.info("noise: %s, SNR %s dB, p %.2f", "demo generator" if self.generated
                 else f"{len(self.recordings)} recordings in {cfg['dir']}", list(self.snr), self.p)

    def samples(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` samples of noise: a random stretch of one recording (looped when shorter)."""
        if self.generated:
            kind = DEMO_NOISE[int(rng.integers(len(DEMO_NOISE)))]
            m = int(math.ceil(n * DEMO_RATE / self.sampling_rate)) + 1
            y = resample(make_noise(kind, m, rng), DEMO_RATE, self.sampling_rate)
            return np.resize(y, n)
        rec = self.recordings[int(rng.integers(len(self.recordings)))]
        if rec.num_samples > n:  # (a fraction, not a sample index: another view's copy starts at the same time)
            start = int(rng.random() * (rec.num_samples - n))
            y = rec.load_audio(offset=start / rec.sampling_rate, duration=n / rec.sampling_rate)[0]
        else:
            y = rec.load_audio()[0]
        return np.resize(y, n) if y.size != n else y

    def chosen(self, rng: np.random.Generator) -> bool:
        return bool(rng.random() < self.p)

    def apply(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``audio`` plus noise at an SNR drawn from the range (speech power over the whole cut)."""
        snr = float(rng.uniform(*self.snr))
        noise = self.samples(audio.size, rng).astype(np.float64)
        p_speech, p_noise = float(np.mean(audio.astype(np.float64) ** 2)), float(np.mean(noise**2))
        if p_speech <= 0.0 or p_noise <= 0.0:
            return audio
        return (audio + noise * math.sqrt(p_speech / (p_noise * 10 ** (snr / 10)))).astype(audio.dtype)


class Reverb(Augmentation):
    """Convolution with a room impulse response from a directory (lhotse ``reverb_rir``)."""

    name = "reverb"

    def __init__(self, cfg: Mapping[str, Any], sampling_rate: int) -> None:
        self.p = _number(cfg, "reverb", "p", 0.0, 1.0)
        self.sampling_rate = sampling_rate
        if not cfg.get("dir"):
            raise ConfigError("data.augment.reverb.dir is required: a directory of room impulse responses")
        self.recordings = load_audio_set(cfg["dir"], "impulse response", sampling_rate)
        log.info("reverb: %d impulse responses in %s, p %.2f", len(self.recordings), cfg["dir"], self.p)

    def pick(self, rng: np.random.Generator) -> Optional[Recording]:
        if rng.random() >= self.p:
            return None
        return self.recordings[int(rng.integers(len(self.recordings)))]


class SpecAugmentation(Augmentation):
    """lhotse's SpecAugment: masks keep frames in place, time warp moves them."""

    name = "specaugment"

    @staticmethod
    def build(cfg: Mapping[str, Any]) -> SpecAugment:
        """lhotse's SpecAugment from the ``specaugment`` section (``time_warp_factor`` 0: no warping)."""
        opts = {k: v for k, v in cfg.items() if k != "enabled"}
        try:
            return SpecAugment(**opts)
        except (TypeError, ValueError, AssertionError) as e:
            raise ConfigError(f"data.augment.specaugment: {e}") from e

    @staticmethod
    def moves_frames(opts: Mapping[str, Any]) -> Optional[str]:
        tw = opts.get("time_warp_factor", 80)
        if tw is not None and float(tw) >= 1:
            return f"data.augment.specaugment.time_warp_factor = {tw}"
        return None


#: the sections of ``data.augment`` and what each declares
AUGMENTATIONS: dict[str, type[Augmentation]] = {k.name: k for k in (Volume, Noise, Reverb, SpecAugmentation)}


def frame_moving(aug_cfg: Optional[Mapping[str, Any]]) -> list[str]:
    """Settings of the enabled augmentations that move frames (what archive KD must refuse)."""
    cfg = augment_config(aug_cfg)
    return [setting for name, opts in cfg.items()
            if opts["enabled"] and (setting := AUGMENTATIONS[name].moves_frames(opts))]


# --------------------------------------------------------------------------- batches
class Augmenter:
    """Loads a batch's features with the configured augmentations applied.

    Cuts that get noise or reverberation have their features recomputed from
    the perturbed audio (the same lhotse Fbank as ``prepare fbank``, same
    frame count); the others read their stored features. Gain then shifts the
    log-mel energies and SpecAugment masks (and warps) the padded batch.
    """

    def __init__(self, cfg: Optional[Mapping[str, Any]], sampling_rate: int, seed: int = 0) -> None:
        self.cfg = augment_config(cfg)
        self.seed = int(seed)
        self.epoch = 0
        on = {name for name, opts in self.cfg.items() if opts["enabled"]}
        self.volume = Volume(self.cfg["volume"]) if "volume" in on else None
        self.noise = Noise(self.cfg["noise"], sampling_rate) if "noise" in on else None
        self.reverb = Reverb(self.cfg["reverb"], sampling_rate) if "reverb" in on else None
        self.spec_augment = SpecAugmentation.build(self.cfg["specaugment"]) if "specaugment" in on else None
        self._views: list[Augmenter] = []  # other views' augmenters (:meth:`view`), kept at this epoch
        self.clean = False  # a view that takes the frame moves alone (:meth:`view`)

    @property
    def active(self) -> list[str]:
        """Names of the enabled augmentations."""
        return [name for name, opts in self.cfg.items() if opts["enabled"]]

    def set_epoch(self, epoch: int) -> None:
        """New random draws each epoch (the trainer calls it before building the epoch's loader)."""
        self.epoch = int(epoch)
        for other in self._views:
            other.set_epoch(epoch)

    def _audio_features(self, cut: Cut, rng_noise: Optional[np.random.Generator], rir: Optional[Recording]) -> np.ndarray:
        src = cut.drop_features()
        if rir is not None:
            src = src.reverb_rir(rir_recording=rir, affix_id=False)
        try:
            audio = src.load_audio()[0]
        except Exception as e:
            raise DataError(f"cut {cut.id}: cannot read audio for noise/reverb augmentation: {e}") from e
        if rng_noise is not None:
            audio = self.noise.apply(audio, rng_noise)
        extractor = fbank_extractor(cut.sampling_rate, num_mel_bins=cut.num_features)
        feats = extractor.extract(audio.astype(np.float32), cut.sampling_rate)
        n = cut.num_frames
        if abs(feats.shape[0] - n) > 1:
            raise DataError(f"cut {cut.id}: recomputed features have {feats.shape[0]} frames, stored ones {n}")
        if feats.shape[0] < n:
            feats = np.concatenate([feats, feats[-1:].repeat(n - feats.shape[0], 0)])
        return feats[:n]

    def cut_features(self, cut: Cut) -> np.ndarray:
        """The augmented ``(num_frames, num_features)`` features of one cut."""
        rng_noise = _rng(self.seed, self.epoch, cut.id, "noise")
        noisy = self.noise is not None and self.noise.chosen(rng_noise)
        rir = self.reverb.pick(_rng(self.seed, self.epoch, cut.id, "reverb")) if self.reverb else None
        if noisy or rir is not None:
            feats = self._audio_features(cut, rng_noise if noisy else None, rir)
        else:
            feats = cut.load_features()
        if self.volume is not None:
            feats = Volume.apply(feats, self.volume.gain_db(_rng(self.seed, self.epoch, cut.id, "volume")))
        return feats

    def view(self, sampling_rate: int, clean: bool = False) -> "Augmenter":
        """An augmenter of another view of the same cuts (an online teacher's broadband copy of a narrowband
        student's cuts): the same config, seed and epoch, so every cut gets the same gain and the same noise
        or impulse response at the same offset and SNR, resampled to ``sampling_rate``. ``clean``: none of
        those, only the student's frame moves (time warp). Time warp and masks come from the student's
        augmenter in :meth:`paired`."""
        other = copy.copy(self)
        other._views, other.clean = [], clean
        if clean:
            other.volume = other.noise = other.reverb = None
        for name in ("noise", "reverb"):
            aug = getattr(other, name)
            if aug is not None and aug.sampling_rate != sampling_rate:
                aug = copy.copy(aug)
                aug.recordings = [r.resample(sampling_rate) for r in aug.recordings]
                aug.sampling_rate = sampling_rate
                setattr(other, name, aug)
        self._views.append(other)
        return other

    def features(self, cuts: CutSet) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ``features (B, T, F)`` and ``feature_lens (B,)`` with gain, noise and reverberation, before SpecAugment."""
        if self.volume is None and self.noise is None and self.reverb is None:
            return collate_features(cuts)
        arrays = [torch.from_numpy(np.ascontiguousarray(self.cut_features(c))) for c in cuts]
        lens = torch.tensor([a.shape[0] for a in arrays], dtype=torch.int)
        return torch.nn.utils.rnn.pad_sequence(arrays, batch_first=True, padding_value=LOG_EPSILON), lens

    def paired(
        self, cuts: CutSet, others: Sequence[tuple["Augmenter", CutSet]] = ()
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
        """The augmented batch of ``cuts`` and of each other view (``(augmenter from :meth:`view`, its cuts in
        the same order)``): SpecAugment draws the same time warp and masks for every view (same frames per
        cut; frequency masks on the same bin indices; a clean view gets the time warp alone), and the
        global random streams end where they would without the other views."""
        feats, lens = self.features(cuts)
        outs = [aug.features(view_cuts) for aug, view_cuts in others]
        for (_, view_lens), (_, view_cuts) in zip(outs, others):
            if not torch.equal(view_lens, lens):
                i = int((view_lens != lens).nonzero()[0])
                raise DataError(f"cut {view_cuts[i].id}: {int(view_lens[i])} feature frames in the other view, "
                                f"{int(lens[i])} in the student's: the views must have the same frames")
        if self.spec_augment is None:
            return (feats, lens), outs
        state = (random.getstate(), np.random.get_state(), torch.get_rng_state())

        def rewind() -> None:  # the global streams SpecAugment draws from, back to where the batch began
            random.setstate(state[0]), np.random.set_state(state[1]), torch.set_rng_state(state[2])

        warped = []
        for (view_feats, view_lens), (aug, _) in zip(outs, others):
            rewind()
            warped.append((self._warp(view_feats) if aug.clean else self.spec_augment(view_feats), view_lens))
        rewind()
        return (self.spec_augment(feats), lens), warped

    def _warp(self, feats: torch.Tensor) -> torch.Tensor:
        """SpecAugment's time warp of each sequence without its masks: lhotse's own per-sequence step, so
        it draws what the full SpecAugment draws before its masks (which take torch's random stream)."""
        out = feats.clone()
        for i in range(feats.size(0)):
            out[i] = self.spec_augment._forward_single(feats[i], warp=True, mask=False)
        return out

    def __call__(self, cuts: CutSet) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ``features (B, T, F)`` and ``feature_lens (B,)`` of ``cuts`` (in their order)."""
        return self.paired(cuts)[0]
