"""The embedded demo corpus: espeak-ng digits and home-automation commands in Aurora-like noise.

It lets the whole recipe (teachers, students, decoding, report) run anywhere
without downloading a corpus, while staying hard enough that WER is not 0:
voices in dev and test are held out from train, utterances vary in rate and
pitch, and most of them are mixed with procedurally generated noise at 20-0 dB
SNR (dev and test also hold 0 dB, unseen in training, as in Aurora-2).

Everything is a function of ``(seed, part, index)``: each utterance draws its
text, voice and condition from one seeded generator and its noise from
another, and :mod:`kdasr.data.espeak` synthesizes from a fresh library state,
so the same seed gives byte-identical audio whatever ``num_jobs`` is, and a
killed build resumes by rendering only the missing files.

Layout under ``out_dir``: ``audio/<part>/<cut_id>.flac`` (16 kHz),
``manifests/{recordings,supervisions,cuts}_<part>.jsonl.gz``, ``lexicon.txt``
(word -> espeak IPA phones), ``stats.yaml``, ``.demo.done`` (the config of a
finished build).
"""
from __future__ import annotations

import collections
import contextlib
import logging
import math
import multiprocessing
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import scipy.signal
import soundfile as sf
import torch
import yaml
from lhotse import CutSet, MonoCut, Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.audio import AudioSource
from tqdm import tqdm

from kdasr.data import espeak
from kdasr.data.errors import DataError
from kdasr.utils.io import Pathlike, atomic_path, atomic_write_text, save_manifest

log = logging.getLogger(__name__)

# Bump when a change alters the generated audio or text, so an old build is not reused.
DEMO_VERSION = 1
SAMPLING_RATE = 16000
PARTS = ("train", "dev", "test")
_PART_ID = {p: i for i, p in enumerate(PARTS)}
# Random streams per part: utterance spec, its noise, the part's babble bank.
_SPEC_STREAM, _NOISE_STREAM, _BABBLE_STREAM = 0, 1, 2

SIZES: dict[str, dict[str, int]] = {
    "tiny": {"num_train": 40, "num_dev": 12, "num_test": 12},
    "small": {"num_train": 400, "num_dev": 60, "num_test": 90},
    "default": {"num_train": 1600, "num_dev": 200, "num_test": 300},
}


def _voices(accents: tuple[str, ...], variants: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"{a}+{v}" for v in variants for a in accents)


# Speaker id = espeak voice name. Variants (the 'speakers') are disjoint across
# parts, so dev and test voices are never heard in training.
VOICES: dict[str, tuple[str, ...]] = {
    "train": _voices(
        ("en-us", "en", "en-gb-x-rp", "en-029", "en-gb-scotland"),
        ("m1", "m2", "m3", "m4", "f1", "f2", "f3", "klatt"),
    ),
    "dev": _voices(("en-us", "en-gb-x-gbclan", "en-029"), ("m5", "f4", "klatt2")),
    "test": _voices(("en", "en-us-nyc", "en-gb-x-gbcwmd", "en-gb-scotland"), ("m6", "m7", "f5", "klatt3")),
}

CONDITIONS: dict[str, tuple[str, ...]] = {
    "train": ("clean", "snr20", "snr15", "snr10", "snr5"),
    "dev": ("clean", "snr20", "snr15", "snr10", "snr5", "snr0"),
    "test": ("clean", "snr20", "snr15", "snr10", "snr5", "snr0"),
}
NOISE_TYPES = ("white", "pink", "car", "babble")

RATE_WPM = (130, 210)
PITCH = (25, 75)
PITCH_RANGE = (20, 80)
WORD_GAP = (0, 2)  # extra pause between words, 10 ms units
LEVEL_DBFS = (-30.0, -20.0)  # active speech level
SILENCE_S = (0.05, 0.35)  # added before and after the synthesized speech
NOISE_FLOOR_DBFS = -75.0  # keeps 'clean' audio from having digitally silent frames
BABBLE_SENTENCES = 24
BABBLE_TALKERS = (4, 8)
DIGIT_STRING_PROB = 0.4
DIGIT_STRING_LEN = (3, 7)

DIGITS = ("ZERO", "OH", "ONE", "TWO", "THREE", "FOUR", "FIVE", "SIX", "SEVEN", "EIGHT", "NINE")
SLOTS: dict[str, tuple[str, ...]] = {
    "digit": DIGITS,
    "count": DIGITS[3:],  # TWO..NINE: "SET A TIMER FOR FIVE MINUTES"
    "hour": DIGITS[2:] + ("TEN", "ELEVEN", "TWELVE"),
    "minutes": ("FIFTEEN", "THIRTY", "FORTY FIVE"),
    "onoff": ("ON", "OFF"),
    "room": ("KITCHEN", "BEDROOM", "BATHROOM", "HALLWAY", "GARDEN", "OFFICE"),
    "openclose": ("OPEN", "CLOSE", "LOCK", "UNLOCK"),
    "side": ("FRONT", "BACK", "GARAGE"),
    "doorwin": ("DOOR", "WINDOW"),
    "playstop": ("PLAY", "STOP", "PAUSE"),
    "updown": ("UP", "DOWN"),
    "callee": ("HOME", "THE OFFICE", "MOM", "DAD"),
}
TEMPLATES = (
    "TURN {onoff} THE {room} LIGHTS",
    "TURN THE {room} LIGHTS {onoff}",
    "{openclose} THE {side} {doorwin}",
    "{playstop} THE MUSIC",
    "PLAY THE NEXT SONG",
    "TURN THE VOLUME {updown}",
    "CALL {callee}",
    "DIAL {digits}",
    "SET AN ALARM FOR {hour}",
    "SET AN ALARM FOR {hour} {minutes}",
    "SET A TIMER FOR {count} MINUTES",
    "SET THE TEMPERATURE TO {digit} {digit} DEGREES",
    "GO TO CHANNEL {digit} {digit}",
    "WHAT IS THE WEATHER TODAY",
    "WHAT TIME IS IT",
)
_SLOT = re.compile(r"\{(\w+)\}")

# Paul Kellet's pink-noise filter (-3 dB/octave within 0.5 dB above ~10 Hz at 16 kHz).
_PINK_B = (0.049922035, -0.095993537, 0.050612699, -0.004408786)
_PINK_A = (1.0, -2.494956002, 2.017265875, -0.522189400)

DONE_MARKER = ".demo.done"
CONFIG_MARKER = ".demo.config"


class DemoCorpusError(DataError):
    """The demo corpus cannot be built in the requested directory."""


@dataclass(frozen=True)
class UtteranceSpec:
    """Everything that decides one utterance, drawn from its seeded generator."""

    cut_id: str
    part: str
    index: int
    text: str
    voice: str
    rate: int
    pitch: int
    pitch_range: int
    word_gap: int
    condition: str
    noise: str
    snr_db: Optional[float]
    level_dbfs: float
    lead_s: float
    tail_s: float


def vocabulary() -> list[str]:
    """All words the grammar can produce, sorted."""
    words = set(DIGITS)
    for alternatives in SLOTS.values():
        for alt in alternatives:
            words.update(alt.split())
    for template in TEMPLATES:
        words.update(w for w in template.split() if not _SLOT.fullmatch(w))
    return sorted(words)


def _digit_string(rng: np.random.Generator) -> str:
    n = int(rng.integers(DIGIT_STRING_LEN[0], DIGIT_STRING_LEN[1] + 1))
    return " ".join(DIGITS[i] for i in rng.integers(0, len(DIGITS), n))


def random_text(rng: np.random.Generator) -> str:
    """A connected digit string (3-7 digits) or a command phrase; UPPERCASE, single spaces."""
    if rng.random() < DIGIT_STRING_PROB:
        return _digit_string(rng)
    template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]

    def fill(m: re.Match) -> str:
        slot = m.group(1)
        if slot == "digits":
            return _digit_string(rng)
        alternatives = SLOTS[slot]
        return alternatives[int(rng.integers(len(alternatives)))]

    return _SLOT.sub(fill, template)


def _rng(seed: int, part: str, stream: int, index: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, _PART_ID[part], stream, index])


def utterance_spec(seed: int, part: str, index: int) -> UtteranceSpec:
    """The text, voice and condition of utterance ``index`` of ``part``."""
    rng = _rng(seed, part, _SPEC_STREAM, index)
    voices, conditions = VOICES[part], CONDITIONS[part]
    # Voices round-robin; conditions shift by one every pass over the voices,
    # so each voice is heard in every condition and the conditions stay balanced.
    voice = voices[index % len(voices)]
    condition = conditions[(index + index // len(voices)) % len(conditions)]
    text = random_text(rng)
    noise = "none"
    snr: Optional[float] = None
    noise_pick = NOISE_TYPES[int(rng.integers(len(NOISE_TYPES)))]
    if condition != "clean":
        noise, snr = noise_pick, float(condition[len("snr"):])
    return UtteranceSpec(
        cut_id=f"demo-{part}-{index:05d}",
        part=part,
        index=index,
        text=text,
        voice=voice,
        rate=int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)),
        pitch=int(rng.integers(PITCH[0], PITCH[1] + 1)),
        pitch_range=int(rng.integers(PITCH_RANGE[0], PITCH_RANGE[1] + 1)),
        word_gap=int(rng.integers(WORD_GAP[0], WORD_GAP[1] + 1)),
        condition=condition,
        noise=noise,
        snr_db=snr,
        level_dbfs=round(float(rng.uniform(*LEVEL_DBFS)), 2),
        lead_s=round(float(rng.uniform(*SILENCE_S)), 3),
        tail_s=round(float(rng.uniform(*SILENCE_S)), 3),
    )


def active_rms(x: np.ndarray, frame: int = 320, floor_db: float = 40.0) -> float:
    """RMS over 20 ms frames within ``floor_db`` of the loudest (a simple speech active level).

    SNR against the whole-file power would depend on how much silence espeak
    and the padding add; against the active level it means what it says.
    """
    n = len(x) // frame
    if n == 0:
        return float(np.sqrt(np.mean(np.square(x)) + 1e-20))
    power = np.mean(np.square(x[: n * frame].reshape(n, frame)), axis=1)
    active = power[power >= power.max() * 10 ** (-floor_db / 10)]
    return float(np.sqrt(active.mean() + 1e-20))


def make_noise(kind: str, n: int, rng: np.random.Generator, babble: Optional[np.ndarray] = None) -> np.ndarray:
    """Unit-RMS noise of ``kind`` (white, pink, car, babble), ``n`` samples at 16 kHz."""
    if kind == "white":
        y = rng.standard_normal(n)
    elif kind == "pink":
        y = scipy.signal.lfilter(_PINK_B, _PINK_A, rng.standard_normal(n))
    elif kind == "car":
        # Brown rumble (leaky integrator, ~13 Hz corner) plus engine harmonics.
        rumble = scipy.signal.lfilter([1.0], [1.0, -0.995], rng.standard_normal(n))
        rumble /= np.sqrt(np.mean(np.square(rumble))) + 1e-12
        t = np.arange(n) / SAMPLING_RATE
        f0 = rng.uniform(25.0, 60.0)
        engine = sum(
            np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 7)
        )
        engine /= np.sqrt(np.mean(np.square(engine))) + 1e-12
        y = rumble + 0.5 * engine
    elif kind == "babble":
        if babble is None or babble.size == 0:
            raise ValueError("babble noise needs a babble bank of synthesized speech")
        bank = babble if babble.size > n else np.tile(babble, n // babble.size + 2)
        talkers = int(rng.integers(BABBLE_TALKERS[0], BABBLE_TALKERS[1] + 1))
        y = np.zeros(n)
        for offset in rng.integers(0, bank.size - n, talkers):
            y += bank[offset : offset + n]
    else:
        raise ValueError(f"unknown noise type {kind!r}; choose from {NOISE_TYPES}")
    y = np.asarray(y, dtype=np.float64)
    return y / (np.sqrt(np.mean(np.square(y))) + 1e-12)


def babble_bank(seed: int, part: str, num_sentences: int = BABBLE_SENTENCES) -> np.ndarray:
    """Concatenated sentences from the part's own voices, each at unit active level.

    Babble from the part's voices keeps held-out test voices out of training
    audio, even in the background.
    """
    rng = _rng(seed, part, _BABBLE_STREAM)
    voices = VOICES[part]
    pieces = []
    for _ in range(num_sentences):
        speech, _ = espeak.synthesize(
            random_text(rng).lower(),
            voices[int(rng.integers(len(voices)))],
            rate=int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)),
            pitch=int(rng.integers(PITCH[0], PITCH[1] + 1)),
            sampling_rate=SAMPLING_RATE,
        )
        pieces.append(speech / active_rms(speech))
    return np.concatenate(pieces).astype(np.float32)


def render_utterance(spec: UtteranceSpec, seed: int, babble: Optional[np.ndarray] = None) -> np.ndarray:
    """Synthesize, pad, level and mix one utterance; float32 at 16 kHz, length a multiple of 10 ms.

    The 10 ms multiple keeps ``duration * 8000`` an integer, so the
    narrowband view has the same feature frame count without rounding.
    """
    try:
        speech, _ = espeak.synthesize(
            spec.text.lower(), spec.voice, spec.rate, spec.pitch, spec.pitch_range, spec.word_gap,
            sampling_rate=SAMPLING_RATE,
        )
    except espeak.EspeakError as e:
        raise DemoCorpusError(f"utterance {spec.cut_id}: {e}") from e
    rng = _rng(seed, spec.part, _NOISE_STREAM, spec.index)
    level = 10 ** (spec.level_dbfs / 20)
    speech = speech.astype(np.float64) * (level / active_rms(speech))
    lead = int(round(spec.lead_s * SAMPLING_RATE))
    tail = int(round(spec.tail_s * SAMPLING_RATE))
    hop = SAMPLING_RATE // 100
    n = math.ceil((lead + speech.size + tail) / hop) * hop
    x = np.zeros(n)
    x[lead : lead + speech.size] = speech
    if spec.snr_db is not None:
        x += make_noise(spec.noise, n, rng, babble) * level * 10 ** (-spec.snr_db / 20)
    x += rng.standard_normal(n) * 10 ** (NOISE_FLOOR_DBFS / 20)
    peak = np.abs(x).max()
    if peak > 0.99:
        x *= 0.99 / peak
    return x.astype(np.float32)


def _audio_path(out_dir: Path, spec: UtteranceSpec) -> Path:
    return out_dir / "audio" / spec.part / f"{spec.cut_id}.flac"


_WORKER_BABBLE: dict[str, np.ndarray] = {}


def _init_worker(banks: dict[str, np.ndarray], single_thread: bool) -> None:
    _WORKER_BABBLE.clear()
    _WORKER_BABBLE.update(banks)
    if single_thread:
        torch.set_num_threads(1)


def _render_job(job: tuple[UtteranceSpec, int, str]) -> str:
    spec, seed, path = job
    audio = render_utterance(spec, seed, _WORKER_BABBLE.get(spec.part))
    with atomic_path(path) as tmp:
        sf.write(tmp, audio, SAMPLING_RATE, subtype="PCM_16", format="FLAC")
    return spec.cut_id


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Run short per-utterance tensor ops single-threaded; threads only contend on them."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def demo_config(
    size: str = "default",
    seed: int = 0,
    num_train: Optional[int] = None,
    num_dev: Optional[int] = None,
    num_test: Optional[int] = None,
) -> dict:
    """The settings that decide the corpus content (recorded in ``.demo.done``)."""
    if size not in SIZES:
        raise ValueError(f"unknown demo corpus size {size!r}; choose from {', '.join(SIZES)}")
    counts = dict(SIZES[size])
    for key, value in (("num_train", num_train), ("num_dev", num_dev), ("num_test", num_test)):
        if value is not None:
            counts[key] = int(value)
        if counts[key] < 1:
            raise ValueError(f"{key} must be at least 1, got {counts[key]}")
    return {"version": DEMO_VERSION, "size": size, "seed": int(seed), **counts}


def _read_marker(path: Path) -> Optional[dict]:
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise DemoCorpusError(f"cannot read {path}: {e}; remove it to rebuild") from e


def load_demo_corpus(out_dir: Pathlike) -> dict[str, CutSet]:
    """The cuts of a built corpus, part -> CutSet."""
    out_dir = Path(out_dir)
    result = {}
    for part in PARTS:
        path = out_dir / "manifests" / f"cuts_{part}.jsonl.gz"
        if not path.is_file():
            raise DemoCorpusError(f"demo corpus manifest {path} is missing")
        result[part] = CutSet.from_file(path)
    return result


def make_demo_corpus(
    out_dir: Pathlike,
    size: str = "default",
    seed: int = 0,
    num_jobs: int = 1,
    num_train: Optional[int] = None,
    num_dev: Optional[int] = None,
    num_test: Optional[int] = None,
) -> dict[str, CutSet]:
    """Build (or resume, or reuse) the demo corpus in ``out_dir``; returns part -> CutSet.

    A finished build with the same settings and all its audio is returned as
    is; otherwise only missing audio files are rendered and the manifests,
    lexicon and statistics are rewritten. A directory holding a build with
    other settings is refused rather than mixed.
    """
    out_dir = Path(out_dir)
    config = demo_config(size, seed, num_train, num_dev, num_test)
    counts = {p: config[f"num_{p}"] for p in PARTS}
    specs = {p: [utterance_spec(seed, p, i) for i in range(counts[p])] for p in PARTS}
    all_specs = [s for p in PARTS for s in specs[p]]

    for marker in (DONE_MARKER, CONFIG_MARKER):
        previous = _read_marker(out_dir / marker)
        if previous is not None and previous != config:
            raise DemoCorpusError(
                f"{out_dir} holds a demo corpus built with {previous}, not {config}; "
                "use another directory or remove it"
            )
    manifests = [out_dir / "manifests" / f"cuts_{p}.jsonl.gz" for p in PARTS]
    todo = [s for s in all_specs if not _audio_path(out_dir, s).is_file()]
    if (out_dir / DONE_MARKER).is_file() and not todo and all(m.is_file() for m in manifests):
        log.info("demo corpus in %s is complete (%s); not regenerating", out_dir, config)
        return load_demo_corpus(out_dir)

    missing_voices = [v for p in PARTS for v in VOICES[p] if not espeak.voice_exists(v)]
    if missing_voices:
        raise DemoCorpusError(f"espeak-ng voices missing from {espeak.data_path()}: {missing_voices}")
    atomic_write_text(out_dir / CONFIG_MARKER, yaml.safe_dump(config, sort_keys=True))
    log.info("demo corpus %s: %d of %d audio files to render with %d job(s)", out_dir, len(todo), len(all_specs), num_jobs)
    if todo:
        _render_all(out_dir, todo, seed, num_jobs)

    cuts = {p: _write_manifests(out_dir, p, specs[p]) for p in PARTS}
    write_lexicon(out_dir / "lexicon.txt")
    stats = corpus_stats(cuts)
    atomic_write_text(out_dir / "stats.yaml", yaml.safe_dump(stats, sort_keys=False, allow_unicode=True))
    _log_stats(stats)
    atomic_write_text(out_dir / DONE_MARKER, yaml.safe_dump(config, sort_keys=True))
    return cuts


def _render_all(out_dir: Path, todo: list[UtteranceSpec], seed: int, num_jobs: int) -> None:
    babble_parts = sorted({s.part for s in todo if s.noise == "babble"})
    with _torch_threads(1):
        banks = {p: babble_bank(seed, p) for p in babble_parts}
        for part in {s.part for s in todo}:
            (out_dir / "audio" / part).mkdir(parents=True, exist_ok=True)
        jobs = [(s, seed, str(_audio_path(out_dir, s))) for s in todo]
        progress = dict(total=len(jobs), desc="demo corpus", unit="utt")
        if num_jobs <= 1:
            _init_worker(banks, single_thread=False)
            for _ in tqdm(map(_render_job, jobs), **progress):
                pass
            return
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(num_jobs, mp_context=ctx, initializer=_init_worker, initargs=(banks, True)) as pool:
            for _ in tqdm(pool.map(_render_job, jobs, chunksize=8), **progress):
                pass


def _write_manifests(out_dir: Path, part: str, specs: list[UtteranceSpec]) -> CutSet:
    recordings, supervisions, cuts = [], [], []
    for spec in specs:
        path = _audio_path(out_dir, spec)
        try:
            info = sf.info(str(path))
        except RuntimeError as e:
            raise DemoCorpusError(f"utterance {spec.cut_id}: cannot read {path}: {e}; delete it to re-render") from e
        if info.samplerate != SAMPLING_RATE or info.channels != 1:
            raise DemoCorpusError(f"utterance {spec.cut_id}: {path} is not 16 kHz mono; delete it to re-render")
        duration = info.frames / SAMPLING_RATE
        rec = Recording(
            id=spec.cut_id,
            sources=[AudioSource(type="file", channels=[0], source=str(path))],
            sampling_rate=SAMPLING_RATE,
            num_samples=info.frames,
            duration=duration,
        )
        sup = SupervisionSegment(
            id=spec.cut_id,
            recording_id=spec.cut_id,
            start=0.0,
            duration=duration,
            channel=0,
            text=spec.text,
            language="English",
            speaker=spec.voice,
            custom={"condition": spec.condition, "noise": spec.noise, "rate": spec.rate, "pitch": spec.pitch},
        )
        recordings.append(rec)
        supervisions.append(sup)
        cuts.append(MonoCut(id=spec.cut_id, start=0.0, duration=duration, channel=0, recording=rec, supervisions=[sup]))
    manifest_dir = out_dir / "manifests"
    save_manifest(RecordingSet.from_recordings(recordings), manifest_dir / f"recordings_{part}.jsonl.gz")
    save_manifest(SupervisionSet.from_segments(supervisions), manifest_dir / f"supervisions_{part}.jsonl.gz")
    cutset = CutSet.from_cuts(cuts)
    save_manifest(cutset, manifest_dir / f"cuts_{part}.jsonl.gz")
    return cutset


def write_lexicon(path: Pathlike, voice: str = "en-us") -> dict[str, list[str]]:
    """Write ``WORD phone phone ...`` for the whole vocabulary (espeak IPA, stress removed)."""
    lexicon: dict[str, list[str]] = {}
    for word in vocabulary():
        phones = [p for w in espeak.phonemize(word.lower(), voice) for p in w]
        if not phones:
            raise DemoCorpusError(f"espeak-ng gave no phones for word {word!r} (voice {voice})")
        lexicon[word] = phones
    atomic_write_text(path, "".join(f"{w} {' '.join(p)}\n" for w, p in lexicon.items()))
    return lexicon


def corpus_stats(cuts: dict[str, CutSet]) -> dict:
    """Hours, utterances, voices, conditions and words per part, plus the vocabulary."""
    stats: dict = {"sampling_rate": SAMPLING_RATE, "vocabulary_size": len(vocabulary()), "parts": {}}
    for part, cs in cuts.items():
        sups = [c.supervisions[0] for c in cs]
        words = [w for s in sups for w in s.text.split()]
        stats["parts"][part] = {
            "utterances": len(sups),
            "hours": round(sum(c.duration for c in cs) / 3600, 4),
            "mean_duration_s": round(sum(c.duration for c in cs) / max(len(sups), 1), 3),
            "num_voices": len({s.speaker for s in sups}),
            "voices": sorted({s.speaker for s in sups}),
            "words": len(words),
            "distinct_words": len(set(words)),
            "conditions": dict(sorted(collections.Counter(s.custom["condition"] for s in sups).items())),
            "noise": dict(sorted(collections.Counter(s.custom["noise"] for s in sups).items())),
        }
    stats["vocabulary"] = vocabulary()
    return stats


def _log_stats(stats: dict) -> None:
    for part, s in stats["parts"].items():
        log.info(
            "demo %s: %d utterances, %.3f h, %d voices, %d distinct words; conditions %s",
            part, s["utterances"], s["hours"], s["num_voices"], s["distinct_words"], s["conditions"],
        )
    log.info("demo vocabulary: %d words", stats["vocabulary_size"])
