"""Export a trained acoustic model to ONNX, with a sidecar that says how to feed it.

The ONNX graph takes raw fbank features (global CMVN is inside the model) and
returns CTC log-probs at 40 ms frames:

- inputs ``features (B, T, F) float32`` and ``feature_lens (B,) int64``;
- outputs ``log_probs (B, ceil(T/4), V) float32`` (log-softmax) and ``out_lens (B,) int64``.

Batch and time axes are dynamic. Frames of ``log_probs`` at or beyond
``out_lens`` are padding. Unlike the torch model, the graph does not trim
features padded past ``max(feature_lens)``, so pad only to the longest
utterance if the output should have exactly ``max(out_lens)`` frames.

The graph is traced with torch's TorchScript-based exporter: the
``torch.export``-based one needs ``onnxscript``, which the ``export`` extra does
not install. Tracing records one path through the Python code, so every export
is checked (by default) against torch on a padded batch of another size than
the one traced.
"""
from __future__ import annotations

import importlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch
import yaml
from torch import nn

from kdasr import __version__
from kdasr.data.features import fbank_extractor
from kdasr.data.tokenizer import LangError, Tokenizer
from kdasr.errors import KdasrError
from kdasr.models import AcousticModel
from kdasr.models.checkpoint import load_checkpoint, model_from_checkpoint
from kdasr.utils.io import Pathlike, atomic_path, atomic_write_text

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
#: ceil-mode max pooling (the VGG model) has no ONNX form before opset 10.
MIN_OPSET = 10
#: the newest opset torch's TorchScript-based exporter supports (past it torch warns, then fails with a graph dump).
MAX_OPSET = 20
#: log-probs of float32 graphs agree to ~1e-6; 1e-3 leaves room for big models and other kernels.
DEFAULT_TOLERANCE = 1e-3
#: the check's padded batch: two lengths, neither a multiple of 4, so ceil lengths are exercised.
CHECK_LENGTHS = (203, 118)
#: the traced example differs in batch size and length from the check, so the check tests dynamic axes.
_TRACE_LENGTHS = (61, 45, 32)

INPUT_NAMES = ("features", "feature_lens")
OUTPUT_NAMES = ("log_probs", "out_lens")
_DYNAMIC_AXES = {
    "features": {0: "batch", 1: "time"},
    "feature_lens": {0: "batch"},
    "log_probs": {0: "batch", 1: "out_time"},
    "out_lens": {0: "batch"},
}
_INSTALL_HINT = "pip install 'kdasr[export]'"
_CKPT_KEYS = ("model", "model_cfg", "num_features", "vocab_size")


class ExportError(KdasrError, RuntimeError):
    """A model that cannot be exported, or an exported graph that disagrees with torch."""


@dataclass
class ExportResult:
    onnx_path: Path
    meta_path: Path
    meta: dict
    #: largest |onnx - torch| over valid log-prob frames; None when the check was skipped
    max_abs_diff: Optional[float]


class OnnxExportWrapper(nn.Module):
    """The model with log-softmax on top: a deployment wants log-probs, not logits."""

    def __init__(self, model: AcousticModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor, feature_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, out_lens = self.model(features, feature_lens)
        return logits.float().log_softmax(dim=-1), out_lens.long()


def require_module(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ExportError(f"ONNX export needs the '{module}' package: {_INSTALL_HINT}") from e


def sidecar_path(onnx_path: Pathlike) -> Path:
    """``model.onnx`` -> ``model.meta.yaml`` (never clashes with a recipe's ``config.yaml``)."""
    return Path(onnx_path).with_suffix(".meta.yaml")


def random_batch(model: AcousticModel, lengths: Sequence[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A zero-padded batch of random features around the model's CMVN stats (so they normalise to ~N(0, 1))."""
    g = torch.Generator().manual_seed(seed)
    num_features = model.num_features
    feats = torch.zeros(len(lengths), max(lengths), num_features)
    for i, n in enumerate(lengths):
        noise = torch.randn(n, num_features, generator=g)
        feats[i, :n] = model.cmvn.mean + model.cmvn.std * noise
    return feats, torch.tensor(list(lengths), dtype=torch.long)


def _check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported: kdasr models export to opsets {MIN_OPSET}..{MAX_OPSET} "
                          f"(ceil-mode pooling needs {MIN_OPSET}; torch's exporter stops at {MAX_OPSET})")


def export_model_onnx(model: AcousticModel, opset: int = DEFAULT_OPSET) -> bytes:
    """Trace ``model`` into a serialized ONNX graph with dynamic batch and time.

    The exporter warns that it is deprecated, that the Python shape checks in
    ``forward`` become constants (fine: the feature dimension is fixed), and
    that LSTM graphs may not generalise across batch sizes (the check runs
    another batch size). Those warnings go to the debug log, not the console.
    """
    _check_opset(opset)
    for name, m in model.named_modules():
        if isinstance(m, nn.LSTM) and m.proj_size:
            raise ExportError(
                f"{name or 'model'}: ONNX has no LSTM with projections (proj_size={m.proj_size}); "
                "train with proj_size: 0 to export"
            )
    if any(t.device.type != "cpu" for t in model.state_dict().values()):
        raise ExportError("export a model on the CPU: tracing on another device bakes that device into the graph")
    wrapper = OnnxExportWrapper(model).eval()
    was_training = model.training
    model.eval()
    example = random_batch(model, _TRACE_LENGTHS, seed=1)
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.onnx.export(
                wrapper, example, buf, dynamo=False, opset_version=opset,
                input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES), dynamic_axes=_DYNAMIC_AXES,
            )
    except Exception as e:  # the exporter raises many types; its first line names the unsupported op
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportError(f"torch could not export {type(model).__name__} to ONNX opset {opset}: {first}") from e
    finally:
        model.train(was_training)
    for w in caught:
        log.debug("torch.onnx: %s", w.message)
    return buf.getvalue()


@torch.no_grad()
def compare_with_torch(
    model: AcousticModel, onnx_model: Union[bytes, Pathlike], lengths: Sequence[int] = CHECK_LENGTHS, seed: int = 0,
) -> float:
    """Run onnxruntime and torch (``model`` on the CPU) on one padded batch; return max |diff| of valid log-probs.

    Frames past ``out_lens`` are padding and not compared. Different output
    lengths or shapes raise ``ExportError``: no tolerance makes them right.
    """
    ort = require_module("onnxruntime")
    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    feats, lens = random_batch(model, lengths, seed)
    was_training = model.training
    model.eval()
    try:
        ref_logp, ref_lens = OnnxExportWrapper(model).eval()(feats, lens)
    finally:
        model.train(was_training)
    ref_logp, ref_lens = ref_logp.numpy(), ref_lens.numpy()
    logp, out_lens = session.run(list(OUTPUT_NAMES), {"features": feats.numpy(), "feature_lens": lens.numpy()})
    if logp.shape != ref_logp.shape or not np.array_equal(out_lens, ref_lens):
        raise ExportError(
            f"ONNX output disagrees with torch on lengths {list(lengths)}: log_probs {logp.shape} vs "
            f"{ref_logp.shape}, out_lens {out_lens.tolist()} vs {ref_lens.tolist()}"
        )
    return float(max(np.abs(logp[i, :n] - ref_logp[i, :n]).max(initial=0.0) for i, n in enumerate(ref_lens)))


def _lang_tokens(ckpt: dict, lang_dir: Optional[Pathlike]) -> tuple[Optional[str], Optional[list[str]]]:
    """The lang dir and its tokens (id order) if its hash matches the checkpoint's, so ids can be mapped to text.

    An explicit ``lang_dir`` that does not match is an error; the training
    config's lang dir (often relative to the recipe) is only used if found.
    """
    explicit = lang_dir is not None
    if not explicit:
        lang_dir = ((ckpt.get("config") or {}).get("data") or {}).get("lang_dir")
        if not lang_dir:
            log.warning("tokens not written to the sidecar: the checkpoint names no lang dir; pass --lang-dir")
            return None, None
    try:
        tok = Tokenizer.from_dir(lang_dir)
    except (LangError, OSError) as e:
        if explicit:
            raise ExportError(f"cannot read lang dir {lang_dir}: {e}") from e
        log.warning("tokens not written to the sidecar: lang dir %s of the training config is not readable here (%s); "
                    "pass --lang-dir", lang_dir, e)
        return str(lang_dir), None
    if ckpt.get("lang_hash") and tok.hash != ckpt["lang_hash"]:
        msg = f"lang dir {lang_dir} (hash {tok.hash[:12]}) is not the token set the checkpoint was trained with " \
              f"(hash {str(ckpt['lang_hash'])[:12]})"
        if explicit:
            raise ExportError(msg)
        log.warning("tokens not written to the sidecar: %s", msg)
        return str(lang_dir), None
    if tok.vocab_size != ckpt["vocab_size"]:
        raise ExportError(f"lang dir {lang_dir} has {tok.vocab_size} tokens, the checkpoint {ckpt['vocab_size']}")
    return str(lang_dir), list(tok.tokens)


def build_meta(
    model: AcousticModel, ckpt: dict, checkpoint: Pathlike, onnx_path: Path, opset: int,
    lang_dir: Optional[str], tokens: Optional[list[str]], check: Optional[dict],
    sample_rate: Optional[int] = None,
) -> dict:
    """Everything a deployment needs besides the graph: feature layout, frame rates, vocabulary.

    ``features`` holds the fbank options (:mod:`kdasr.data.knf_fbank`) when
    the audio's sample rate is known; None otherwise.
    """
    f, v = model.num_features, model.vocab_size
    features = fbank_extractor(sample_rate, f).config.to_dict() if sample_rate else None
    return {
        "format": "onnx",
        "onnx_file": onnx_path.name,
        "opset": opset,
        "kdasr_version": __version__,
        "checkpoint": str(checkpoint),
        "epoch": ckpt.get("epoch"),
        "step": ckpt.get("step"),
        "model": model.model_cfg,
        "num_params": model.num_params(),
        "num_features": f,
        "sample_rate": sample_rate,
        "features": features,
        "vocab_size": v,
        "blank_id": 0,
        "subsampling": model.subsampling,
        "input_frame_shift": round(model.frame_shift / model.subsampling, 6),
        "frame_shift": model.frame_shift,
        "inputs": {
            "features": {"shape": ["batch", "time", f], "dtype": "float32",
                         "what": "log-mel fbank as `kdasr prepare fbank` computes it (10 ms shift, snip_edges=False), "
                                 "not normalised (global CMVN is inside the model); pad to the longest utterance "
                                 "with any finite value"},
            "feature_lens": {"shape": ["batch"], "dtype": "int64", "what": "valid frames per utterance"},
        },
        "outputs": {
            "log_probs": {"shape": ["batch", "ceil(time/4)", v], "dtype": "float32",
                          "what": "CTC log-softmax over tokens (blank_id is the blank); "
                                  "frames >= out_lens are padding"},
            "out_lens": {"shape": ["batch"], "dtype": "int64", "what": "ceil(feature_lens / 4)"},
        },
        "lang_hash": ckpt.get("lang_hash"),
        "lang_dir": lang_dir,
        "tokens": tokens,
        "check": check,
    }


def _with_metadata(onnx_bytes: bytes, meta: dict) -> bytes:
    """Copy the sidecar's scalars into the graph's metadata_props, so the .onnx file describes itself."""
    onnx = require_module("onnx")
    proto = onnx.load_from_string(onnx_bytes)
    keys = ("num_features", "sample_rate", "vocab_size", "blank_id", "subsampling", "input_frame_shift",
            "frame_shift", "lang_hash")
    for key in keys:
        if meta.get(key) is not None:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, str(meta[key])
    entry = proto.metadata_props.add()
    entry.key, entry.value = "model", str(meta["model"].get("name"))
    proto.producer_name, proto.producer_version = "kdasr", __version__
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"the exported graph is not valid ONNX: {e}") from e
    return proto.SerializeToString()


def checkpoint_sample_rate(ckpt: dict, sample_rate: Optional[int], checkpoint: Pathlike) -> Optional[int]:
    """The training audio's sample rate: the checkpoint's, or ``sample_rate`` for checkpoints that predate it."""
    recorded = ckpt.get("sampling_rate")
    if recorded and sample_rate and int(recorded) != int(sample_rate):
        raise ExportError(f"{checkpoint} was trained on {recorded} Hz features, not {sample_rate} Hz")
    return int(recorded or sample_rate) if (recorded or sample_rate) else None


def _load(checkpoint: Pathlike) -> tuple[AcousticModel, dict]:
    try:
        ckpt = load_checkpoint(checkpoint)
    except (OSError, RuntimeError) as e:
        raise ExportError(str(e)) from e
    missing = [k for k in _CKPT_KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ExportError(f"{checkpoint} is not a kdasr training checkpoint (no {', '.join(missing)})")
    try:
        return model_from_checkpoint(ckpt), ckpt
    except (RuntimeError, ValueError, TypeError) as e:  # unknown model name or options, mismatched state dict
        raise ExportError(f"cannot rebuild the model of checkpoint {checkpoint}: {e}") from e


def export_onnx(
    checkpoint: Pathlike,
    out: Pathlike,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    lang_dir: Optional[Pathlike] = None,
    sample_rate: Optional[int] = None,
) -> ExportResult:
    """Export ``checkpoint`` to ``out`` (ONNX) and write ``sidecar_path(out)``.

    With ``check``, onnxruntime must reproduce torch's log-probs within
    ``tolerance`` on a padded batch; otherwise nothing is written, so a
    deployment never picks up a graph that was not verified. ``sample_rate``
    is the training audio's (checkpoints record it; give it for older ones).
    """
    _check_opset(opset)
    require_module("onnx")
    if check:
        require_module("onnxruntime")
    out = Path(out)
    model, ckpt = _load(checkpoint)
    rate = checkpoint_sample_rate(ckpt, sample_rate, checkpoint)
    used_lang_dir, tokens = _lang_tokens(ckpt, lang_dir)
    log.info("exporting %s (%s, %d parameters) to ONNX opset %d", checkpoint, model.name, model.num_params(), opset)
    onnx_bytes = export_model_onnx(model, opset)
    check_info = None
    max_diff = None
    if check:
        max_diff = compare_with_torch(model, onnx_bytes, CHECK_LENGTHS)
        check_info = {"lengths": list(CHECK_LENGTHS), "max_abs_diff": max_diff, "tolerance": tolerance}
        if not max_diff <= tolerance:
            raise ExportError(
                f"onnxruntime log-probs differ from torch by up to {max_diff:.3g} (tolerance {tolerance:g}) "
                f"on a padded batch of lengths {list(CHECK_LENGTHS)}; nothing written to {out}"
            )
        log.info("check: onnxruntime vs torch max |diff| of log-probs %.3g (tolerance %g)", max_diff, tolerance)
    meta = build_meta(model, ckpt, checkpoint, out, opset, used_lang_dir, tokens, check_info, rate)
    onnx_bytes = _with_metadata(onnx_bytes, meta)
    with atomic_path(out) as tmp:
        tmp.write_bytes(onnx_bytes)
    meta_path = sidecar_path(out)
    atomic_write_text(meta_path, yaml.safe_dump(meta, sort_keys=False, allow_unicode=True))
    log.info("wrote %s (%.2f MB) and %s", out, len(onnx_bytes) / 1e6, meta_path)
    return ExportResult(out, meta_path, meta, max_diff)
