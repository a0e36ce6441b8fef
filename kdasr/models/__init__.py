"""Acoustic model registry: build any model by name from a config section.

A recipe names its model in YAML (``model: {name: vgg, hidden: 512, ...}``);
checkpoints store that section, so ``build_model`` is the one place where a
network is constructed, for training, decoding and export alike.
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any, Callable, Mapping, Optional, TypeVar

import torch
from torch import nn

from kdasr.config import ConfigError, check_config
from kdasr.models.common import AcousticModel, GlobalCMVN, make_pad_mask, output_lengths
from kdasr.registry import Registry

__all__ = [
    "AcousticModel",
    "GlobalCMVN",
    "build_model",
    "check_model_config",
    "list_models",
    "macs_per_second",
    "make_pad_mask",
    "model_class",
    "model_summary",
    "output_lengths",
    "register_model",
]

_REGISTRY: Registry[type[AcousticModel]] = Registry("model", "model.name")
# Modules whose import registers the built-in families.
_BUILTIN_MODULES = (
    "kdasr.models.vgg", "kdasr.models.lstm", "kdasr.models.cnn", "kdasr.models.specialists", "kdasr.models.oracle",
)

M = TypeVar("M", bound=type)


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: make an ``AcousticModel`` subclass buildable as ``model_cfg["name"] == name``."""

    add = _REGISTRY.register(name)

    def deco(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, AcousticModel)):
            raise TypeError(f"@register_model({name!r}) needs an AcousticModel subclass, got {cls!r}")
        return add(cls)

    return deco


def _load_builtins() -> None:
    for mod in _BUILTIN_MODULES:
        importlib.import_module(mod)


def list_models() -> list[str]:
    """Names ``build_model`` accepts, sorted."""
    _load_builtins()
    return sorted(_REGISTRY.names())


def model_class(name: str) -> type[AcousticModel]:
    """The class registered as ``name``: what a caller asks about a model kind (its inputs, objective).

    An unknown name is a :class:`kdasr.config.ConfigError` (a ``ValueError``) naming the known ones.
    """
    _load_builtins()
    return _REGISTRY.get(name)


def check_model_config(model_cfg: Any) -> type[AcousticModel]:
    """The class ``model_cfg`` names, after refusing options it does not take or of the wrong type
    (checked before a run writes anything; the model checks the values themselves)."""
    _load_builtins()
    if not isinstance(model_cfg, Mapping) or "name" not in model_cfg:
        raise ConfigError(f"model config needs a 'name' (one of {', '.join(list_models())}); got {model_cfg!r}")
    options = dict(model_cfg)
    cls = model_class(options.pop("name"))
    # utt_norm (per-utterance mean normalization, a level-invariant front end) is an option of every model
    utt_norm = options.pop("utt_norm", False)
    if not isinstance(utt_norm, bool):
        raise ConfigError(f"model.utt_norm must be true or false, got {utt_norm!r}")
    # The keyword-only defaults are the schema: a scalar or a non-empty list gives its type;
    # an empty or None default (a nested trunk, subsets from a file) is checked by the model.
    schema = {
        p.name: p.default if isinstance(p.default, (bool, int, float, str)) or p.default else None
        for p in inspect.signature(cls.__init__).parameters.values() if p.kind == p.KEYWORD_ONLY
    }
    check_config({"model": options}, {"model": schema})
    return cls


def build_model(
    model_cfg: Mapping[str, Any],
    num_features: int,
    vocab_size: int,
    cmvn: Optional[Mapping[str, Any]] = None,
) -> AcousticModel:
    """Build the model ``model_cfg["name"]`` with the remaining keys as its size options.

    ``cmvn`` holds global ``mean``/``std`` (or ``var``) lists; without it the
    CMVN buffers are the identity and a checkpoint's state dict fills them.
    """
    cls = check_model_config(model_cfg)
    options = {k: v for k, v in model_cfg.items() if k not in ("name", "utt_norm")}
    model = cls(num_features, vocab_size, cmvn, **options)
    if model_cfg.get("utt_norm", False):  # an option of every model, kept in model_cfg so checkpoints and exports rebuild it
        model.utt_norm = True
        model.options["utt_norm"] = True
    return model


def _conv_macs(module: nn.Module, out: torch.Tensor) -> int:
    # Every output element is a dot product over (in_channels / groups) x kernel taps.
    taps = int(torch.tensor(module.kernel_size).prod())
    return out.numel() * (module.in_channels // module.groups) * taps


def _lstm_macs(module: nn.LSTM, frames: int) -> int:
    # Per frame, direction and layer: 4 gates x H x (input + recurrent) plus the projection H -> P.
    h = module.hidden_size
    p = module.proj_size or h
    dirs = 2 if module.bidirectional else 1
    total = 0
    for layer in range(module.num_layers):
        i = module.input_size if layer == 0 else p * dirs
        per_step = 4 * h * (i + p) + (h * p if module.proj_size else 0)
        total += per_step * dirs
    return total * frames


def _lstm_frames(inp: Any) -> int:
    """Frames an LSTM actually steps through (packed: only the valid ones), summed over the batch."""
    if isinstance(inp, nn.utils.rnn.PackedSequence):
        return int(inp.data.size(0))
    # Padded input: (B, T, I) with batch_first, else (T, B, I); both count B*T steps.
    return int(inp.size(0) * inp.size(1)) if inp.dim() == 3 else int(inp.size(0))


@torch.no_grad()
def macs_per_second(model: nn.Module, num_features: int, seconds: float = 1.0) -> float:
    """Multiply-accumulates per second of audio (100 input frames), counted analytically.

    Forward hooks add, for one utterance of ``100 * seconds`` frames:

    - ``Conv1d``/``Conv2d``: ``out.numel() * in_channels / groups * prod(kernel_size)``;
    - ``Linear``: ``in.numel() / in_features * in_features * out_features``;
    - ``LSTM``: ``frames * sum_layers dirs * (4 H (I + P) + [H P if proj_size])``
      with ``P = proj_size or H`` and ``I`` the layer's input width.

    Biases, normalisation, activations and pooling are not counted: they are a
    few percent of the total and their cost depends on the backend.
    """
    frames = int(round(100 * seconds))
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    total = 0

    def hook(module: nn.Module, inputs: tuple, out: Any) -> None:
        nonlocal total
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            total += _conv_macs(module, out)
        elif isinstance(module, nn.Linear):
            total += inputs[0].numel() // module.in_features * module.in_features * module.out_features
        elif isinstance(module, nn.LSTM):
            total += _lstm_macs(module, _lstm_frames(inputs[0]))

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear, nn.LSTM))
    ]
    was_training = model.training
    model.eval()
    try:
        feats = torch.zeros(1, frames, num_features, device=device)
        model(feats, torch.tensor([frames], device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return float(total) / seconds


def model_summary(model: AcousticModel, num_features: int) -> dict:
    """What ``kdasr model-info`` prints: name, size, cost and output frame rate."""
    return {
        "name": model.name,
        "options": dict(model.options),
        "num_params": model.num_params(),
        "macs_per_second": macs_per_second(model, num_features),
        "frame_shift": model.frame_shift,
        "frame_rate": 1.0 / model.frame_shift,
    }
