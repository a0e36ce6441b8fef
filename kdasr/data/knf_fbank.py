"""Log-mel fbank computed by kaldi-native-fbank, as a lhotse feature extractor.

sherpa-onnx (the runtime kdasr students ship to) computes its features with
kaldi-native-fbank. Training on features from the same library, with the
options sherpa-onnx is given at deployment (:func:`sherpa_feature_options`),
makes the deployed model see what it was trained on: lhotse's own ``Fbank``
with the same options agrees with it to ~3e-4, but any option left at a
different default (the 8 kHz upper mel edge: 8.6 in the top bins) silently
changes what the model hears.

Registered with lhotse as ``kaldi-native-fbank``, so lhotse's
``compute_and_store_features`` and its writers and manifests work unchanged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Union

import kaldi_native_fbank as knf
import numpy as np
import torch
from lhotse.features.base import FeatureExtractor, register_extractor


@dataclass
class KnfFbankConfig:
    """The fbank options kdasr sets; the rest are kaldi-native-fbank's (and Kaldi's) defaults."""

    sampling_rate: int = 16000
    num_mel_bins: int = 80
    frame_shift: float = 0.01
    frame_length: float = 0.025
    low_freq: float = 20.0
    #: negative: an offset from Nyquist, as in Kaldi
    high_freq: float = -400.0
    dither: float = 0.0
    snip_edges: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "KnfFbankConfig":
        return KnfFbankConfig(**data)


def knf_options(cfg: KnfFbankConfig) -> knf.FbankOptions:
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = float(cfg.sampling_rate)
    opts.frame_opts.frame_shift_ms = cfg.frame_shift * 1000.0
    opts.frame_opts.frame_length_ms = cfg.frame_length * 1000.0
    opts.frame_opts.dither = cfg.dither
    opts.frame_opts.snip_edges = cfg.snip_edges
    opts.mel_opts.num_bins = cfg.num_mel_bins
    opts.mel_opts.low_freq = cfg.low_freq
    opts.mel_opts.high_freq = cfg.high_freq
    return opts


def sherpa_feature_options(cfg: KnfFbankConfig) -> dict[str, Any]:
    """Keyword arguments of ``sherpa_onnx.FeatureExtractorConfig`` that reproduce ``cfg``.

    sherpa-onnx feeds samples in [-1, 1] (``normalize_samples=True``), as
    lhotse loads them, and uses a 10 ms shift / 25 ms window like kdasr.
    """
    if (cfg.frame_shift, cfg.frame_length) != (0.01, 0.025):
        raise ValueError(f"sherpa-onnx computes 10 ms / 25 ms frames; these features use "
                         f"{cfg.frame_shift * 1000:g} ms / {cfg.frame_length * 1000:g} ms")
    return {"sampling_rate": cfg.sampling_rate, "feature_dim": cfg.num_mel_bins, "low_freq": cfg.low_freq,
            "high_freq": cfg.high_freq, "dither": cfg.dither, "normalize_samples": True,
            "snip_edges": cfg.snip_edges}


@register_extractor
class KnfFbank(FeatureExtractor):
    """lhotse ``FeatureExtractor`` over ``kaldi_native_fbank.OnlineFbank`` (mono float samples in [-1, 1])."""

    name = "kaldi-native-fbank"
    config_type = KnfFbankConfig

    @property
    def frame_shift(self) -> float:
        return self.config.frame_shift

    def feature_dim(self, sampling_rate: int) -> int:
        return self.config.num_mel_bins

    def extract(self, samples: Union[np.ndarray, torch.Tensor], sampling_rate: int) -> np.ndarray:
        if sampling_rate != self.config.sampling_rate:
            raise ValueError(f"fbank set up for {self.config.sampling_rate} Hz audio got {sampling_rate} Hz: "
                             "resample the audio first")
        x = samples.cpu().numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
        if x.ndim == 2:
            if x.shape[0] != 1:
                raise ValueError(f"fbank takes mono audio, got {x.shape[0]} channels")
            x = x[0]
        fbank = knf.OnlineFbank(knf_options(self.config))
        fbank.accept_waveform(float(sampling_rate), np.ascontiguousarray(x, dtype=np.float32))
        fbank.input_finished()
        n = fbank.num_frames_ready
        if n == 0:
            return np.zeros((0, self.config.num_mel_bins), dtype=np.float32)
        return np.stack([fbank.get_frame(i) for i in range(n)]).astype(np.float32, copy=False)
