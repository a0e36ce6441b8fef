"""ONNX export: every model family matches torch under onnxruntime; CLI, sidecar and errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from kdasr.cli.main import cli
from kdasr.data.tokenizer import build_char_lang
from kdasr.export import ExportError, compare_with_torch, export_model_onnx, export_onnx, random_batch, sidecar_path
from kdasr.models import AcousticModel, build_model

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

F = 13
# The demo's conf/model_*.yaml with tiny widths (and the non-default variants an export could trip on).
TINY = {
    "cnn": {"name": "cnn", "channels": 8, "num_layers": 2, "kernel_size": 7, "separable": True,
            "residual": True, "norm": "batch", "dropout": 0.1},
    "cnn_plain_ln": {"name": "cnn", "channels": 8, "num_layers": 1, "kernel_size": 5, "separable": False,
                     "residual": False, "norm": "layer"},
    "vgg": {"name": "vgg", "channels": [4, 8], "convs_per_block": 2, "hidden": 16, "num_layers": 2, "dropout": 0.1},
    "lstm": {"name": "lstm", "conv_channels": 8, "hidden": 8, "num_layers": 2, "bidirectional": True,
             "proj_size": 0, "dropout": 0.1},
    "lstm_uni": {"name": "lstm", "conv_channels": 8, "hidden": 8, "num_layers": 2, "bidirectional": False},
    # the level-invariant front end lives in the model, so the exported graph must hold it too
    "cnn_utt_norm": {"name": "cnn", "channels": 8, "num_layers": 2, "utt_norm": True},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(key: str, vocab_size: int = 7) -> AcousticModel:
    """A tiny model with real-looking CMVN and BatchNorm statistics (identity ones would hide mistakes)."""
    g = torch.Generator().manual_seed(0)
    cmvn = {"mean": (torch.randn(F, generator=g) * 3).tolist(), "std": (torch.rand(F, generator=g) + 0.5).tolist()}
    torch.manual_seed(0)
    model = build_model(TINY[key], F, vocab_size, cmvn)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(0, 0.5, generator=g)
            m.running_var.uniform_(0.5, 2.0, generator=g)
    return model.eval()


@pytest.mark.parametrize("key", sorted(TINY))
def test_onnx_matches_torch_on_padded_batches(key):
    model = _tiny(key)
    graph = export_model_onnx(model)
    # Batch sizes and lengths unlike the traced example; lengths below 4 and not multiples of 4 hit ceil().
    for lengths in [(203, 118), (37, 22, 5, 1), (3,), (9, 9)]:
        diff = compare_with_torch(model, graph, lengths)
        assert diff < 1e-4, (key, lengths, diff)
    assert not model.training
    # The sidecar's promise: the value padding holds does not change the valid frames.
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    feats, lens = random_batch(model, (30, 11))
    zero_padded, out_lens = session.run(None, {"features": feats.numpy(), "feature_lens": lens.numpy()})
    feats[1, 11:] = 7.0
    other_padded, _ = session.run(None, {"features": feats.numpy(), "feature_lens": lens.numpy()})
    n = out_lens[1]
    assert out_lens.tolist() == [8, 3] and np.abs(zero_padded[1, :n] - other_padded[1, :n]).max() < 1e-5


def test_graph_has_named_dynamic_inputs_and_outputs():
    proto = onnx.load_from_string(export_model_onnx(_tiny("cnn")))
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(proto.graph.input) + list(proto.graph.output)}
    assert dims == {"features": ["batch", "time", F], "feature_lens": ["batch"],
                    "log_probs": ["batch", "out_time", 7], "out_lens": ["batch"]}
    types = {v.name: v.type.tensor_type.elem_type for v in list(proto.graph.input) + list(proto.graph.output)}
    assert types == {"features": onnx.TensorProto.FLOAT, "feature_lens": onnx.TensorProto.INT64,
                     "log_probs": onnx.TensorProto.FLOAT, "out_lens": onnx.TensorProto.INT64}


def test_unexportable_models_and_opsets_are_refused_clearly():
    model = build_model({"name": "lstm", "conv_channels": 8, "hidden": 8, "num_layers": 1, "proj_size": 4}, F, 7)
    with pytest.raises(ExportError, match="proj_size=4"):
        export_model_onnx(model.eval())
    for opset in (9, 21):
        with pytest.raises(ExportError, match=f"opset {opset} is not supported.*opsets 10..20"):
            export_model_onnx(_tiny("cnn"), opset=opset)


@pytest.fixture
def lang_dir(tmp_path) -> Path:
    build_char_lang(["abc de", "fed cba"], tmp_path / "lang_char")
    return tmp_path / "lang_char"


def _checkpoint(path: Path, key: str, lang_dir: Path) -> Path:
    """A checkpoint with the keys ``load_model`` reads plus lang hash and provenance, as training writes them."""
    from kdasr.data.tokenizer import Tokenizer

    tok = Tokenizer.from_dir(lang_dir)
    model = _tiny(key, tok.vocab_size)
    torch.save({"model": model.state_dict(), "model_cfg": model.model_cfg, "num_features": F,
                "vocab_size": tok.vocab_size, "lang_hash": tok.hash, "frame_shift": 0.04, "epoch": 3, "step": 120,
                "config": {"data": {"lang_dir": str(lang_dir)}, "model": model.model_cfg}}, path)
    return path


def test_cli_export_writes_checked_model_and_sidecar(tmp_path, lang_dir):
    ckpt = _checkpoint(tmp_path / "best.pt", "lstm", lang_dir)
    out = tmp_path / "exp" / "model.onnx"
    result = CliRunner().invoke(cli, ["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(out),
                                      "--opset", "13"])
    assert result.exit_code == 0, result.output
    assert "check: max |onnx - torch| of log-probs" in result.output
    meta = yaml.safe_load(sidecar_path(out).read_text())
    assert sidecar_path(out).name == "model.meta.yaml"
    tokens = (lang_dir / "tokens.txt").read_text().split()[::2]
    assert meta["tokens"] == tokens and meta["vocab_size"] == len(tokens) and meta["blank_id"] == 0
    assert meta["num_features"] == F and meta["subsampling"] == 4
    assert meta["frame_shift"] == 0.04 and meta["input_frame_shift"] == 0.01
    assert meta["opset"] == 13 and meta["model"]["name"] == "lstm" and meta["epoch"] == 3
    assert meta["check"]["max_abs_diff"] < 1e-4 and meta["check"]["lengths"] == [203, 118]
    proto = onnx.load(str(out))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["lang_hash"] == meta["lang_hash"] and props["num_features"] == str(F)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [13]
    assert (out.parent / "log" / "export.log").is_file()
    # The written file (not only the in-memory graph) reproduces torch.
    assert compare_with_torch(_tiny("lstm", len(tokens)), out, (50, 17)) < 1e-4


def test_export_subprocess(tmp_path, lang_dir):
    ckpt = _checkpoint(tmp_path / "best.pt", "vgg", lang_dir)
    out = tmp_path / "model.onnx"
    proc = subprocess.run([sys.executable, "-m", "kdasr", "export", "--checkpoint", str(ckpt), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and "max |onnx - torch|" in proc.stdout
    assert yaml.safe_load(sidecar_path(out).read_text())["model"]["name"] == "vgg"


def test_bad_checkpoints_give_clear_errors(tmp_path):
    runner = CliRunner()
    out = str(tmp_path / "m.onnx")
    result = runner.invoke(cli, ["export", "--checkpoint", str(tmp_path / "nope.pt"), "--out", out])
    assert result.exit_code == 2 and "does not exist" in result.output
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    result = runner.invoke(cli, ["export", "--checkpoint", str(tmp_path / "garbage.pt"), "--out", out])
    assert result.exit_code == 1 and "cannot be read" in result.output, result.output
    torch.save({"weights": 1}, tmp_path / "other.pt")
    result = runner.invoke(cli, ["export", "--checkpoint", str(tmp_path / "other.pt"), "--out", out])
    assert result.exit_code == 1 and "not a kdasr training checkpoint (no model, model_cfg" in result.output
    assert not list(tmp_path.glob("*.onnx"))


def test_missing_onnxruntime_says_how_to_install(tmp_path, lang_dir, monkeypatch):
    ckpt = _checkpoint(tmp_path / "best.pt", "cnn", lang_dir)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    result = CliRunner().invoke(cli, ["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1 and "pip install 'kdasr[export]'" in result.output
    # Without the check, onnxruntime is not needed.
    result = CliRunner().invoke(cli, ["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "m.onnx"),
                                      "--no-check"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "m.meta.yaml").read_text())["check"] is None


def test_failed_check_writes_nothing(tmp_path, lang_dir, monkeypatch):
    ckpt = _checkpoint(tmp_path / "best.pt", "cnn", lang_dir)
    monkeypatch.setattr("kdasr.export.compare_with_torch", lambda *a, **k: 0.25)
    with pytest.raises(ExportError, match=r"differ from torch by up to 0\.25 \(tolerance 0\.001\)"):
        export_onnx(ckpt, tmp_path / "m.onnx")
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.yaml")) and not list(tmp_path.glob(".m*"))


def test_lang_dir_must_match_the_checkpoint(tmp_path, lang_dir):
    ckpt = _checkpoint(tmp_path / "best.pt", "cnn", lang_dir)
    other = build_char_lang(["xyz uvw", "vu"], tmp_path / "lang_other").lang_dir
    with pytest.raises(ExportError, match="not the token set the checkpoint was trained with"):
        export_onnx(ckpt, tmp_path / "m.onnx", check=False, lang_dir=other)
    # The training config's lang dir gone: still exported, tokens left out (with a warning).
    for f in lang_dir.iterdir():
        f.unlink()
    result = export_onnx(ckpt, tmp_path / "m.onnx", check=False)
    assert result.meta["tokens"] is None and result.meta["lang_hash"]
