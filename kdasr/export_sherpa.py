"""``kdasr export --format sherpa-onnx``: a directory that sherpa-onnx loads as a zipformer-CTC model.

What sherpa-onnx's ``OfflineZipformerCtcModel`` expects, read from its source
(``sherpa-onnx/csrc/offline-zipformer-ctc-model.cc``, ``offline-recognizer-ctc-impl.h``,
``offline-ctc-fst-decoder.cc``, ``symbol-table.cc``, ``features.cc``):

- two inputs, by position: features ``(N, T, C)`` float32 and their lengths
  ``(N,)`` int64; two outputs: log-probs ``(N, T', V)`` and lengths ``(N,)``
  int64. The vocabulary size is read from the output's static last dimension;
  the subsampling factor is fixed at 4; no metadata is needed (kdasr's graph
  is exactly that, CMVN included);
- ``tokens.txt``: ``symbol id`` per line, id 0 the blank. Text is the tokens'
  symbols joined, a leading ``▁`` of a symbol read as a space;
- ``ctc_graph``: an OpenFst ``StdVectorFst`` (binary) whose input labels are
  token id + 1 (label 0 is epsilon), read by kaldi-decoder's ``FasterDecoder``
  with its default beam (16) and ``max_active`` 3000: kdasr's TLG follows the
  same convention (:mod:`kdasr.decode.graph`). sherpa-onnx takes the text from
  the input (token) labels of the best path, not from the words;
- features: kaldi-native-fbank with the options :func:`kdasr.data.features.fbank_extractor`
  uses, which sherpa-onnx sets from the sample rate and feature dimension alone.

``model.int8.onnx`` is onnxruntime's dynamic quantization of every Conv and
MatMul (uint8 weights): on the demo's CNN student it is 3.5x smaller than
fp32 (``tools/bench_export.py`` measures size, speed and WER).
"""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from kdasr.data.knf_fbank import KnfFbankConfig
from kdasr.data.tokenizer import Tokenizer
from kdasr.decode.graph import GraphError, load_graph_info
from kdasr.export import DEFAULT_OPSET, DEFAULT_TOLERANCE, ExportError, export_onnx, require_module
from kdasr.utils.io import Pathlike, atomic_write_text, replace_dir

log = logging.getLogger(__name__)

MODEL = "model.onnx"
MODEL_INT8 = "model.int8.onnx"
TOKENS = "tokens.txt"
GRAPH = "TLG.fst"
GRAPH_FILES = (GRAPH, "words.txt", "graph.yaml")
#: kaldi-decoder's FasterDecoderOptions default, which sherpa-onnx does not change
SHERPA_FST_BEAM = 16.0
SHERPA_FST_MAX_ACTIVE = 3000


@dataclass
class SherpaExport:
    out_dir: Path
    #: file name -> size in bytes
    files: dict[str, int]
    features: KnfFbankConfig


def check_tokens_file(path: Path, tokens: list[str]) -> None:
    """kdasr's ``tokens.txt`` is already sherpa-onnx's format; make sure of it (ids in order, no spaces in symbols)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    expected = [f"{t} {i}" for i, t in enumerate(tokens)]
    if lines != expected or any(not t or any(c.isspace() for c in t) for t in tokens):
        raise ExportError(f"{path} is not a sherpa-onnx tokens.txt ('symbol id' per line, ids 0.. in order)")


def quantize_int8(src: Pathlike, dst: Pathlike) -> None:
    """Dynamic int8 quantization (onnxruntime) of every Conv and MatMul weight, activations at run time."""
    require_module("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # the quantizer logs a line per tensor, and advice for image models
    try:
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8)
    finally:
        logging.disable(previous)


def _copy_graph(graph_dir: Pathlike, lang_hash: Optional[str], dst: Path) -> None:
    """TLG.fst (sherpa's ctc_graph) and the files kdasr's WFST decoder reads with it, so ``dst`` is a graph dir."""
    graph_dir = Path(graph_dir)
    try:
        info = load_graph_info(graph_dir)
    except GraphError as e:
        raise ExportError(str(e)) from e
    if lang_hash and info.get("lang_hash") != lang_hash:
        raise ExportError(f"graph {graph_dir} was built for another token set than the checkpoint's "
                          "(lang hash differs): rebuild it with `kdasr graph`")
    for name in GRAPH_FILES:
        if not (graph_dir / name).is_file():
            raise ExportError(f"graph {graph_dir} has no {name}")
        shutil.copyfile(graph_dir / name, dst / name)


def human_size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def readme_text(name: str, feats: KnfFbankConfig, files: dict[str, int], has_graph: bool) -> str:
    """How to run the exported model with sherpa-onnx from Python and from its command-line tool."""
    rate, dim = feats.sampling_rate, feats.num_mel_bins
    graph_py = ',\n    ctc_graph="TLG.fst",  # optional: CTC + TLG (word LM) search' if has_graph else ""
    graph_cli = " \\\n  --ctc.graph=TLG.fst" if has_graph else ""
    sizes = "\n".join(f"| {f} | {human_size(n)} |" for f, n in sorted(files.items()))
    return f"""# {name}: a kdasr CTC student for sherpa-onnx

| file | size |
|---|---|
{sizes}

`model.onnx` takes {dim}-dim log-mel fbank of {rate} Hz audio, computed by
kaldi-native-fbank as sherpa-onnx computes it from `sample_rate={rate}` and
`feature_dim={dim}` (10 ms shift, 25 ms Povey window, mel bins from {feats.low_freq:g} Hz
to {-feats.high_freq:g} Hz below Nyquist, no dither), which is what `kdasr prepare fbank`
computes; feature normalisation is inside the model. `model.int8.onnx` is the
same model with int8 weights. Audio at another rate is resampled by sherpa-onnx.

## Python (`pip install sherpa-onnx soundfile`)

```python
import sherpa_onnx
import soundfile as sf

recognizer = sherpa_onnx.OfflineRecognizer.from_zipformer_ctc(
    model="model.onnx",  # or "model.int8.onnx"
    tokens="tokens.txt",
    sample_rate={rate},
    feature_dim={dim},
    num_threads=1{graph_py},
)
audio, rate = sf.read("audio.wav", dtype="float32", always_2d=True)
stream = recognizer.create_stream()
stream.accept_waveform(rate, audio.mean(axis=1))
recognizer.decode_stream(stream)
print(stream.result.text)
```

## Command line (`sherpa-onnx-offline` from a sherpa-onnx release or build)

```sh
sherpa-onnx-offline \\
  --zipformer-ctc-model=model.onnx \\
  --tokens=tokens.txt \\
  --sample-rate={rate} \\
  --feat-dim={dim} \\
  --num-threads=1{graph_cli} \\
  audio.wav
```

Or with kdasr: `kdasr transcribe . audio.wav` (`--method greedy|beam|wfst`, `--json` for word times).
"""


def export_sherpa(
    checkpoint: Pathlike,
    out_dir: Pathlike,
    sample_rate: Optional[int] = None,
    lang_dir: Optional[Pathlike] = None,
    graph_dir: Optional[Pathlike] = None,
    int8: bool = True,
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
) -> SherpaExport:
    """Write ``out_dir`` with model.onnx (+ its kdasr sidecar), model.int8.onnx, tokens.txt, TLG.fst, README.md.

    The lang files (tokens.txt, lang.yaml, bpe.model or lexicon.txt) and the
    graph's words.txt and graph.yaml come along, so the directory is also a
    lang dir and a graph dir for kdasr (``kdasr transcribe DIR``).

    Everything is written to a temporary sibling directory renamed into place
    at the end, so ``out_dir`` is either the previous export or a complete new one.
    """
    out_dir = Path(out_dir)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        result = export_onnx(checkpoint, tmp / MODEL, opset=opset, check=check, tolerance=tolerance,
                             lang_dir=lang_dir, sample_rate=sample_rate)
        meta = result.meta
        if meta["tokens"] is None:
            raise ExportError(f"sherpa-onnx needs the tokens: pass the lang dir {checkpoint} was trained with "
                              "(--lang-dir)")
        if meta["features"] is None:
            raise ExportError(f"{checkpoint} does not record the sample rate of its audio: pass --sample-rate")
        feats = KnfFbankConfig.from_dict(meta["features"])
        for f in Tokenizer.from_dir(meta["lang_dir"]).defining_files():
            shutil.copyfile(f, tmp / f.name)
        check_tokens_file(tmp / TOKENS, meta["tokens"])
        if int8:
            quantize_int8(tmp / MODEL, tmp / MODEL_INT8)
        if graph_dir is not None:
            _copy_graph(graph_dir, meta["lang_hash"], tmp)
        files = {n: (tmp / n).stat().st_size for n in (MODEL, MODEL_INT8, TOKENS, GRAPH) if (tmp / n).is_file()}
        name = Path(checkpoint).resolve().parent.name
        atomic_write_text(tmp / "README.md", readme_text(name, feats, files, graph_dir is not None))
        replace_dir(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote %s: %s", out_dir, ", ".join(f"{f} ({human_size(n)})" for f, n in sorted(files.items())))
    return SherpaExport(out_dir, files, feats)
