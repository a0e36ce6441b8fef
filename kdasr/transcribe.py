"""Audio files to text with a trained checkpoint or an exported model (the library side of ``kdasr transcribe``).

Audio is read with lhotse (soundfile, or ffmpeg/torchaudio for other
formats), mixed to mono, resampled to the model's rate, and turned into the
features training used (:func:`kdasr.data.features.fbank_extractor`). Batches
run through torch (checkpoint) or onnxruntime (an ``kdasr export`` file or
directory), and any :mod:`kdasr.decode` search. Word times come from forced
alignment of the hypothesis on the log-probs: a word starts at its first
token's first frame and ends after its last token's last frame (40 ms frames).

A file that cannot be read or decoded is reported by name and skipped; the
others are still transcribed.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
import yaml
from lhotse import Recording
from tqdm import tqdm

from kdasr.data.features import fbank_extractor
from kdasr.data.tokenizer import LangError, Tokenizer
from kdasr.decode import make_decoder
from kdasr.distill.align import token_spans
from kdasr.errors import KdasrError
from kdasr.export import ExportError, checkpoint_sample_rate, require_module, sidecar_path
from kdasr.models.checkpoint import load_model
from kdasr.utils.io import Pathlike

log = logging.getLogger(__name__)

#: extensions picked up when a directory is given (any file named explicitly is tried)
AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".sph", ".aiff", ".aif")


class TranscribeError(KdasrError, ValueError):
    """A model that cannot be loaded for transcription (bad path, no tokens, unknown sample rate)."""


@dataclass
class Transcript:
    path: str
    duration: float
    text: str = ""
    #: ``{"word", "start", "end"}`` in seconds; None where alignment failed
    words: Optional[list[dict[str, Any]]] = None
    error: Optional[str] = None

    def as_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"file": self.path, "error": self.error}
        return {"file": self.path, "duration": round(self.duration, 3), "text": self.text, "words": self.words}


@dataclass
class LoadedModel:
    """Features in, CTC log-probs out, whichever runtime holds the network."""

    tokenizer: Tokenizer
    sample_rate: int
    num_features: int
    frame_shift: float
    #: a graph dir that came with the model (an export directory with TLG.fst)
    graph_dir: Optional[Path] = None
    #: the network: a torch module, or an onnxruntime session
    torch_model: Optional[torch.nn.Module] = None
    session: Any = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @torch.inference_mode()
    def log_probs(self, feats: torch.Tensor, lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.torch_model is not None:
            logits, out_lens = self.torch_model(feats.to(self.device), lens.to(self.device))
            return logits.float().log_softmax(dim=-1).cpu(), out_lens.cpu()
        logp, out_lens = self.session.run(None, {"features": feats.numpy(), "feature_lens": lens.numpy()})
        return torch.from_numpy(logp), torch.from_numpy(out_lens)


def _tokenizer(lang_dir: Optional[Pathlike], lang_hash: Optional[str], what: str) -> Tokenizer:
    if lang_dir is None:
        raise TranscribeError(f"{what} names no lang dir: pass --lang-dir")
    try:
        tok = Tokenizer.from_dir(lang_dir)
    except (LangError, OSError) as e:
        raise TranscribeError(f"cannot read the tokens of {what} ({e}): pass --lang-dir") from e
    if lang_hash and tok.hash != lang_hash:
        raise TranscribeError(f"lang dir {lang_dir} is not the token set {what} was trained with")
    return tok


def load_acoustic_model(
    model: Pathlike,
    lang_dir: Optional[Pathlike] = None,
    sample_rate: Optional[int] = None,
    device: str = "cpu",
    int8: bool = False,
    num_threads: int = 1,
) -> LoadedModel:
    """A checkpoint (``.pt``), an exported ``.onnx`` (with its ``.meta.yaml``), or a sherpa-onnx export directory."""
    path = Path(model)
    if not path.exists():
        raise TranscribeError(f"model {path} does not exist")
    if path.is_dir() or path.suffix == ".onnx":
        onnx_path = path / ("model.int8.onnx" if int8 else "model.onnx") if path.is_dir() else path
        meta_path = sidecar_path(path / "model.onnx" if path.is_dir() else path)
        if not onnx_path.is_file() or not meta_path.is_file():
            raise TranscribeError(f"{path} is not a kdasr export: needs {onnx_path.name} and {meta_path.name}")
        meta = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
        rate = meta.get("sample_rate") or sample_rate
        if meta.get("sample_rate") and sample_rate and int(sample_rate) != int(meta["sample_rate"]):
            raise TranscribeError(f"{path} takes {meta['sample_rate']} Hz features, not {sample_rate} Hz")
        if not rate:
            raise TranscribeError(f"{meta_path} does not record the audio's sample rate: pass --sample-rate")
        here = path if path.is_dir() else None
        tok = _tokenizer(lang_dir or (here if here and (here / "lang.yaml").is_file() else meta.get("lang_dir")),
                         meta.get("lang_hash"), str(path))
        try:
            ort = require_module("onnxruntime")
        except ExportError as e:
            raise TranscribeError(str(e)) from e
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = num_threads
        session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
        graph = here if here is not None and (here / "TLG.fst").is_file() else None
        return LoadedModel(tok, int(rate), int(meta["num_features"]), float(meta["frame_shift"]), graph,
                          session=session)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    try:
        net, ckpt = load_model(path, dev)
    except (FileNotFoundError, RuntimeError, KeyError) as e:
        raise TranscribeError(f"cannot load checkpoint {path}: {e}") from e
    try:
        rate = checkpoint_sample_rate(ckpt, sample_rate, path)
    except ExportError as e:
        raise TranscribeError(str(e)) from e
    if not rate:
        raise TranscribeError(f"{path} does not record the audio's sample rate: pass --sample-rate")
    lang = lang_dir or ((ckpt.get("config") or {}).get("data") or {}).get("lang_dir")
    tok = _tokenizer(lang, ckpt.get("lang_hash"), str(path))
    return LoadedModel(tok, rate, int(ckpt["num_features"]), float(net.frame_shift), None, torch_model=net,
                       device=dev)


def expand_inputs(inputs: Iterable[Pathlike]) -> list[Path]:
    """Files as given; directories expanded to the audio files under them (recursively, sorted)."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)
        else:
            out.append(p)
    return out


def read_mono(path: Path, sample_rate: int) -> np.ndarray:
    """Samples of ``path`` in [-1, 1], channels averaged, at ``sample_rate``; raises on unreadable or empty audio."""
    if not path.is_file():
        raise ValueError("no such file")
    rec = Recording.from_file(path)
    if rec.sampling_rate != sample_rate:
        rec = rec.resample(sample_rate)
    audio = rec.load_audio()
    if audio.size == 0:
        raise ValueError("no audio samples")
    mono = audio.mean(axis=0).astype(np.float32)
    if not np.isfinite(mono).all():
        raise ValueError("audio holds NaN or infinite samples")
    return mono


_BACKEND_ERROR = re.compile(r"^Exception #0 \([^)]*\): <class '[^']*'>: (.+)$", re.MULTILINE)


def error_line(e: Exception) -> str:
    """One line for a failed file: lhotse's first audio backend's reason rather than its multi-line report."""
    text = str(e).strip()
    m = _BACKEND_ERROR.search(text)
    return m.group(1).strip() if m else (text.splitlines() or [type(e).__name__])[0]


def word_times(logp: torch.Tensor, text: str, tokenizer: Tokenizer, frame_shift: float,
               duration: float) -> Optional[list[dict]]:
    """Word start/end times (s) of ``text`` from its forced alignment on ``logp (T, V)``; None if it does not align.

    A token belongs to the word that decoding the tokens up to it ends in;
    tokens that add no text (a word separator) belong to no word. The last
    output frame may reach past the audio (frames are rounded up), so times
    stop at ``duration``.
    """
    if not text:
        return []
    try:
        ids = tokenizer.encode(text)
        spans = token_spans(logp, ids, tokenizer.blank_id)
    except (ValueError, RuntimeError) as e:  # unknown tokens, or more tokens than frames
        log.debug("no word times for %r: %s", text, e)
        return None
    words = text.split()
    bounds: list[list[int]] = [[-1, -1] for _ in words]
    prev = ""
    for k, (start, end) in enumerate(spans):
        decoded = tokenizer.decode(ids[: k + 1])
        if decoded != prev:
            w = len(decoded.split()) - 1
            if 0 <= w < len(words):
                if bounds[w][0] < 0:
                    bounds[w][0] = start
                bounds[w][1] = end
        prev = decoded
    if any(a < 0 for a, _ in bounds):
        return None
    return [{"word": w, "start": round(min(a * frame_shift, duration), 3),
             "end": round(min(b * frame_shift, duration), 3)} for w, (a, b) in zip(words, bounds)]


Loaded = tuple[Transcript, np.ndarray]  # a file's transcript (filled in later) and its features


def _batches(items: list[Loaded], max_frames: int) -> Iterator[list[Loaded]]:
    """Consecutive groups whose padded size (count x longest) stays under ``max_frames`` (one item at least)."""
    batch: list[Loaded] = []
    longest = 0
    for item in items:
        n = len(item[1])
        if batch and max(longest, n) * (len(batch) + 1) > max_frames:
            yield batch
            batch, longest = [], 0
        batch.append(item)
        longest = max(longest, n)
    if batch:
        yield batch


def transcribe(
    model: LoadedModel,
    paths: Sequence[Pathlike],
    method: str = "greedy",
    decoder_opts: Optional[dict[str, Any]] = None,
    max_duration: float = 200.0,
    progress: bool = True,
    with_times: bool = True,
) -> list[Transcript]:
    """Transcribe ``paths`` in order; failed files carry ``error`` (one line naming the cause).

    ``with_times``: align each hypothesis for its word times (a forced alignment per file).
    """
    opts = dict(decoder_opts or {})
    if method == "wfst" and "graph_dir" not in opts and model.graph_dir is not None:
        opts["graph_dir"] = model.graph_dir
    decoder = make_decoder(method, model.tokenizer, device=model.device, **opts)
    extractor = fbank_extractor(model.sample_rate, model.num_features)
    results: list[Transcript] = []
    loaded: list[Loaded] = []
    bar = tqdm(total=len(paths), desc="transcribe", unit="file", disable=None if progress else True)
    try:
        for p in paths:
            t = Transcript(str(p), 0.0)
            results.append(t)
            try:
                x = read_mono(Path(p), model.sample_rate)
                t.duration = len(x) / model.sample_rate
                feats = extractor.extract(x, model.sample_rate)
                if len(feats) == 0:
                    raise ValueError("shorter than one feature frame")
                loaded.append((t, feats))
            except Exception as e:  # lhotse/soundfile/ffmpeg raise many types; the file is named, not the type
                t.error = error_line(e)
                log.error("cannot transcribe %s: %s", p, t.error)
                bar.update(1)
        max_frames = int(max_duration / extractor.frame_shift)
        done = 0
        for batch in _batches(sorted(loaded, key=lambda it: len(it[1])), max_frames):
            lens = torch.tensor([len(f) for _, f in batch])
            feats = torch.zeros(len(batch), int(lens.max()), model.num_features)
            for i, (_, f) in enumerate(batch):
                feats[i, : len(f)] = torch.from_numpy(f)
            logp, out_lens = model.log_probs(feats, lens)
            texts = decoder(logp, out_lens)
            for (t, _), text, lp, n in zip(batch, texts, logp, out_lens.tolist()):
                t.text = text
                if with_times:
                    t.words = word_times(lp[:n], text, model.tokenizer, model.frame_shift, t.duration)
            bar.update(len(batch))
            done += len(batch)
            if bar.disable and progress:
                log.info("transcribed %d of %d files", done, len(loaded))
    finally:
        bar.close()
        close = getattr(decoder, "close", None)
        if close is not None:
            close()
    return results
