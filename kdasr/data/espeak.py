"""espeak-ng speech synthesis and phonemization through ctypes, from the ``espeakng_loader`` wheel.

The wheel ships ``libespeak-ng.so`` and its ``espeak-ng-data``, so the demo
corpus needs no system package.

Determinism: espeak-ng keeps synthesis state in C statics that no API call
resets (pitch-flutter phase, automatic gain control, echo buffer), and
``espeak_Initialize`` seeds its noise generator (breathy voices) from the
clock, so the same text and voice give slightly different samples depending on
what the process synthesized before. The demo corpus must be byte-identical
whatever the job split, so :func:`synthesize` unloads the library
(``espeak_Terminate`` + ``dlclose``) and loads it fresh before every
utterance and then fixes the noise seed (``espeak_ng_SetRandSeed``); that
costs a few milliseconds and makes every waveform a function of its arguments
only. This works only while no other module holds its own handle
on the same shared library (dlclose would then leave it loaded).

The library is not thread-safe: every call holds a module lock. Each process
(e.g. a multiprocessing worker) loads its own copy on first use.
"""
from __future__ import annotations

import _ctypes
import ctypes
import functools
import os
import threading
from pathlib import Path
from typing import Optional

import espeakng_loader
import numpy as np

from kdasr.data.telephone import resample
from kdasr.errors import KdasrError

# espeak_AUDIO_OUTPUT / options / flags / parameters from speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_RATE, _PITCH, _RANGE, _WORDGAP = 1, 3, 4, 7
_PHONEMES_IPA = 0x02
# espeak_TextToPhonemes: bits 8-23 hold a separator put between phonemes.
_PHONE_SEPARATOR = "_"
_STRESS_MARKS = "ˈˌ"

_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakError(KdasrError, RuntimeError):
    """espeak-ng could not be loaded, or refused a voice or a text."""


class _Engine:
    """One loaded copy of libespeak-ng in this process (see the module docstring)."""

    def __init__(self) -> None:
        self.lib: Optional[ctypes.CDLL] = None
        self.pid = -1
        self.sampling_rate = 0
        self.chunks: list[np.ndarray] = []
        # Keep a reference: the C library calls it after this function returns.
        self._callback = _SYNTH_CALLBACK(self._collect)

    def _collect(self, wav, num_samples: int, events) -> int:
        if wav and num_samples > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, (num_samples,)).copy())
        return 0  # 0 = continue synthesis

    def load(self, fresh: bool = False) -> ctypes.CDLL:
        """Return the initialized library; reload it when ``fresh`` or after a fork."""
        if self.lib is not None and self.pid == os.getpid() and not fresh:
            return self.lib
        if self.lib is not None:
            if self.pid == os.getpid():
                self.lib.espeak_Terminate()
            _ctypes.dlclose(self.lib._handle)
            self.lib = None
        path = espeakng_loader.get_library_path()
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            raise EspeakError(f"cannot load espeak-ng library {path}: {e}") from e
        _declare(lib)
        data = espeakng_loader.get_data_path()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise EspeakError(f"espeak_Initialize failed (data path {data})")
        lib.espeak_SetSynthCallback(self._callback)
        self.lib, self.pid, self.sampling_rate = lib, os.getpid(), rate
        return lib


def _declare(lib: ctypes.CDLL) -> None:
    c = ctypes
    lib.espeak_Initialize.argtypes = [c.c_int, c.c_int, c.c_char_p, c.c_int]
    lib.espeak_Initialize.restype = c.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SYNTH_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [c.c_char_p]
    lib.espeak_SetVoiceByName.restype = c.c_int
    lib.espeak_SetParameter.argtypes = [c.c_int, c.c_int, c.c_int]
    lib.espeak_SetParameter.restype = c.c_int
    lib.espeak_Synth.argtypes = [
        c.c_void_p, c.c_size_t, c.c_uint, c.c_int, c.c_uint, c.c_uint, c.c_void_p, c.c_void_p
    ]
    lib.espeak_Synth.restype = c.c_int
    lib.espeak_Synchronize.argtypes = []
    lib.espeak_Synchronize.restype = c.c_int
    lib.espeak_TextToPhonemes.argtypes = [c.POINTER(c.c_void_p), c.c_int, c.c_int]
    lib.espeak_TextToPhonemes.restype = c.c_char_p
    lib.espeak_Terminate.argtypes = []
    lib.espeak_Terminate.restype = c.c_int
    lib.espeak_ng_SetRandSeed.argtypes = [c.c_long]
    lib.espeak_ng_SetRandSeed.restype = None


_ENGINE = _Engine()
_LOCK = threading.RLock()


def data_path() -> Path:
    """The ``espeak-ng-data`` directory shipped in the wheel."""
    return Path(espeakng_loader.get_data_path())


def voice_exists(voice: str) -> bool:
    """True if ``voice`` (``lang`` or ``lang+variant``) names shipped files.

    ``espeak_SetVoiceByName`` silently falls back to the base voice for an
    unknown variant, so a typo would quietly merge two 'speakers'.
    """
    lang, _, variant = voice.partition("+")
    if variant and not (data_path() / "voices" / "!v" / variant).is_file():
        return False
    return lang.lower() in _language_names()


@functools.lru_cache(maxsize=1)
def _language_names() -> frozenset[str]:
    return frozenset(p.name.lower() for p in (data_path() / "lang").rglob("*") if p.is_file())


def synthesize(
    text: str,
    voice: str = "en-us",
    rate: int = 175,
    pitch: int = 50,
    pitch_range: int = 50,
    word_gap: int = 0,
    sampling_rate: Optional[int] = 16000,
    noise_seed: int = 0,
) -> tuple[np.ndarray, int]:
    """Speak ``text`` and return ``(float32 samples in [-1, 1], sampling rate)``.

    ``rate`` is in words per minute (80-450), ``pitch`` and ``pitch_range`` are
    espeak's 0-100 scales, ``word_gap`` adds pauses of 10 ms units between
    words. ``sampling_rate=None`` returns the native rate. ``noise_seed``
    seeds espeak's breath-noise generator. The output depends only on the
    arguments (the library is reloaded, see the module docstring).
    """
    if not text.strip():
        raise EspeakError(f"nothing to synthesize for text {text!r}")
    if not voice_exists(voice):
        raise EspeakError(f"espeak-ng voice {voice!r} is not in {data_path()}")
    encoded = text.encode("utf-8") + b"\0"
    with _LOCK:
        lib = _ENGINE.load(fresh=True)
        lib.espeak_ng_SetRandSeed(int(noise_seed))
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"espeak_SetVoiceByName refused voice {voice!r}")
        for param, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range), (_WORDGAP, word_gap)):
            if lib.espeak_SetParameter(param, int(value), 0) != 0:
                raise EspeakError(f"espeak_SetParameter({param}, {value}) failed for voice {voice!r}")
        _ENGINE.chunks = []
        buf = ctypes.create_string_buffer(encoded)
        err = lib.espeak_Synth(buf, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None)
        lib.espeak_Synchronize()
        chunks, _ENGINE.chunks = _ENGINE.chunks, []
        native = _ENGINE.sampling_rate
    if err != 0 or not chunks:
        raise EspeakError(f"espeak_Synth failed (error {err}) for voice {voice!r}, text {text!r}")
    audio = np.concatenate(chunks).astype(np.float32) / 32768.0
    if sampling_rate is None or sampling_rate == native:
        return audio, native
    return resample(audio, native, sampling_rate), sampling_rate


def phonemize(text: str, voice: str = "en-us", keep_stress: bool = False) -> list[list[str]]:
    """IPA phones of ``text``, one list per word as espeak-ng groups them.

    Uses ``espeak_TextToPhonemes`` in IPA mode with ``_`` between phonemes, so
    multi-letter phonemes (``tʃ``, ``aɪ``, ``uː``) stay one symbol. Stress marks
    are dropped unless ``keep_stress``: a phone token set wants one symbol per
    sound, not per stress level.
    """
    if not voice_exists(voice):
        raise EspeakError(f"espeak-ng voice {voice!r} is not in {data_path()}")
    mode = _PHONEMES_IPA | (ord(_PHONE_SEPARATOR) << 8)
    pieces: list[str] = []
    with _LOCK:
        lib = _ENGINE.load()
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise EspeakError(f"espeak_SetVoiceByName refused voice {voice!r}")
        buf = ctypes.create_string_buffer(text.encode("utf-8"))
        ptr = ctypes.c_void_p(ctypes.addressof(buf))
        # Each call phonemizes one clause and advances ptr; NULL marks the end.
        while ptr.value:
            out = lib.espeak_TextToPhonemes(ctypes.byref(ptr), _CHARS_UTF8, mode)
            if out:
                pieces.append(out.decode("utf-8"))
    words: list[list[str]] = []
    for word in " ".join(pieces).split():
        phones = []
        for p in word.split(_PHONE_SEPARATOR):
            if not keep_stress:
                p = "".join(ch for ch in p if ch not in _STRESS_MARKS)
            if p:
                phones.append(p)
        if phones:
            words.append(phones)
    return words
