"""Acoustic models: frame contract, padding, CMVN, registry, MAC counting, ``kdasr model-info``."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from kdasr.cli.main import cli
from kdasr.config import load_config
from kdasr.models import AcousticModel, build_model, list_models, macs_per_second, model_summary
from kdasr.models.common import GlobalCMVN, make_pad_mask, output_lengths

# proj_size has no oneDNN kernel; torch says so once, which is expected here.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections:UserWarning")

CONF = Path(__file__).resolve().parents[1] / "egs" / "demo" / "conf"
F, V = 13, 7

TINY = {
    "vgg": {"name": "vgg", "channels": [4, 8], "hidden": 16, "num_layers": 1},
    "vgg_dilated": {"name": "vgg", "channels": [4, 8], "hidden": 16, "num_layers": 2, "context": 3, "dilations": [1, 4]},
    "lstm": {"name": "lstm", "conv_channels": 8, "hidden": 8, "num_layers": 2},
    "lstm_uni_proj": {"name": "lstm", "conv_channels": 8, "hidden": 8, "num_layers": 2,
                      "bidirectional": False, "proj_size": 4},
    "cnn": {"name": "cnn", "channels": 8, "num_layers": 2},
    "cnn_plain_ln": {"name": "cnn", "channels": 8, "num_layers": 2, "separable": False, "norm": "layer",
                     "residual": False, "kernel_size": 5},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny(key: str, cmvn: dict | None = None) -> AcousticModel:
    torch.manual_seed(0)
    return build_model(TINY[key], F, V, cmvn)


def test_output_lengths_and_pad_mask():
    assert [output_lengths(t) for t in range(10)] == [0, 1, 1, 1, 1, 2, 2, 2, 2, 3]
    lens = torch.tensor([1, 4, 5, 9, 100])
    assert output_lengths(lens).tolist() == [math.ceil(t / 4) for t in lens.tolist()]
    assert output_lengths(lens, 2).tolist() == [1, 2, 3, 5, 50]
    mask = make_pad_mask(torch.tensor([1, 3]), 4)
    assert mask.tolist() == [[False, True, True, True], [False, False, False, True]]
    assert make_pad_mask(torch.tensor([2, 1])).shape == (2, 2)


def test_registry_lists_and_rejects():
    assert list_models() == ["cnn", "lstm", "oracle", "specialists", "vgg"]
    with pytest.raises(ValueError, match="model.name must be one of cnn, lstm, oracle, specialists, vgg"):
        build_model({"name": "transformer"}, F, V)
    with pytest.raises(ValueError, match=r"got 'lstmm' \(did you mean 'lstm'\?\)"):
        build_model({"name": "lstmm"}, F, V)
    with pytest.raises(ValueError, match="needs a 'name'"):
        build_model({"hidden": 3}, F, V)
    with pytest.raises(ValueError, match=r"unknown key 'model.widht' \(valid: channels, dropout"):
        build_model({"name": "cnn", "widht": 3}, F, V)
    with pytest.raises(ValueError, match=r"model.hidden: expected an integer, got 'big' \(str\)"):
        build_model({"name": "vgg", "hidden": "big"}, F, V)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        build_model({"name": "cnn", "kernel_size": 4}, F, V)
    with pytest.raises(ValueError, match=r"dilations \[1\] must give one value >= 1 per temporal layer \(num_layers=2\)"):
        build_model({"name": "vgg", "num_layers": 2, "dilations": [1]}, F, V)


@pytest.mark.parametrize("key", sorted(TINY))
def test_frames_follow_contract(key):
    model = _tiny(key).eval()
    with torch.no_grad():
        for t in list(range(1, 10)) + [17, 40, 101]:
            lens = torch.tensor([t, max(1, t - 1), max(1, t // 2), 1])
            logits, out_lens = model(torch.randn(4, t, F), lens)
            assert out_lens.tolist() == [math.ceil(n / 4) for n in lens.tolist()], (key, t)
            assert logits.shape == (4, int(out_lens.max()), V), (key, t)
        # Features padded beyond the longest utterance: logits still have max(out_lens) frames.
        logits, out_lens = model(torch.randn(2, 30, F), torch.tensor([9, 6]))
        assert logits.shape == (2, 3, V) and out_lens.tolist() == [3, 2]
        with pytest.raises(ValueError, match="only 5"):
            model(torch.randn(1, 5, F), torch.tensor([6]))
        with pytest.raises(ValueError, match="expected features"):
            model(torch.randn(1, 5, F + 1), torch.tensor([5]))


@pytest.mark.parametrize("key", sorted(TINY))
def test_padding_does_not_change_valid_outputs(key):
    model = _tiny(key).eval()
    lens = torch.tensor([23, 17, 5])
    feats = torch.randn(3, 23, F)
    feats[1, 17:] = 7.0  # whatever the collater pads with must not matter
    with torch.no_grad():
        batch, out_lens = model(feats, lens)
        for b in range(3):
            alone, _ = model(feats[b:b + 1, : lens[b]], lens[b:b + 1])
            torch.testing.assert_close(alone[0], batch[b, : out_lens[b]], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("key", sorted(TINY))
def test_backward_reaches_every_parameter(key):
    model = _tiny(key).train()
    logits, out_lens = model(torch.randn(3, 37, F), torch.tensor([37, 30, 12]))
    loss = nn.functional.ctc_loss(
        logits.log_softmax(-1).transpose(0, 1), torch.tensor([[1, 2, 3], [4, 5, 6], [1, 1, 2]]),
        out_lens, torch.tensor([3, 3, 2]),
    )
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("key", ["vgg", "lstm", "cnn"])
def test_cmvn_is_applied_first_and_travels_in_state_dict(key):
    mean, std = torch.linspace(-2, 2, F), torch.linspace(0.5, 3, F)
    with_cmvn = _tiny(key, {"mean": mean.tolist(), "std": std.tolist()}).eval()
    plain = _tiny(key).eval()
    feats, lens = torch.randn(2, 21, F) * 3 + 1, torch.tensor([21, 14])
    with torch.no_grad():
        a, _ = with_cmvn(feats, lens)
        b, _ = plain((feats - mean) / std, lens)
        c, _ = plain(feats, lens)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(a, c)
    # A checkpoint's model is rebuilt without stats; the state dict brings them back.
    rebuilt = build_model(with_cmvn.model_cfg, F, V)
    rebuilt.load_state_dict(with_cmvn.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(feats, lens)[0], a)


def test_cmvn_stats_forms():
    var = GlobalCMVN.from_stats(2, {"mean": [1.0, 2.0], "var": [4.0, 9.0]})
    assert var.std.tolist() == [2.0, 3.0]
    identity = GlobalCMVN.from_stats(2, None)
    x = torch.randn(3, 2)
    assert torch.equal(identity(x), x)
    with pytest.raises(ValueError, match="3 values but the model takes 2"):
        GlobalCMVN(2, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="need 'mean'"):
        GlobalCMVN.from_stats(2, {"mean": [0.0, 0.0]})


@pytest.mark.parametrize("key", sorted(TINY))
def test_model_cfg_rebuilds_same_network(key):
    model = _tiny(key)
    assert model.model_cfg["name"] == TINY[key]["name"]
    again = build_model(model.model_cfg, F, V)
    again.load_state_dict(model.state_dict())
    assert again.num_params() == model.num_params() > 0
    assert model.frame_shift == pytest.approx(0.04)


class _ConvLinear(AcousticModel):
    """Hand-countable: Conv1d(4->3, k3, stride 2) then stride-2 slicing and Linear(3->5)."""

    def __init__(self) -> None:
        super().__init__(4, 5)
        self.conv = nn.Conv1d(4, 3, 3, stride=2, padding=1)
        self.lin = nn.Linear(3, 5)

    def encode(self, x, feat_lens):
        y = self.conv(x.transpose(1, 2))[:, :, ::2].transpose(1, 2)
        return self.lin(y), output_lengths(feat_lens)


def test_macs_hand_count():
    # 1 s = 100 frames -> conv: 50 outputs x 3 channels x (4 in x 3 taps); linear: 25 frames x 3 x 5.
    assert macs_per_second(_ConvLinear(), 4) == 50 * 3 * 4 * 3 + 25 * 3 * 5
    # LSTM family by formula: conv1 at 50 Hz, conv2 at 25 Hz, 2 bi layers at 25 Hz, output linear.
    lstm = _tiny("lstm")
    c, h = 8, 8
    layers = 2 * (4 * h * (c + h)) + 2 * (4 * h * (2 * h + h))
    expect = 50 * c * F * 3 + 25 * c * c * 3 + 25 * layers + 25 * 2 * h * V
    assert macs_per_second(lstm, F) == expect
    # Unidirectional with projection P: the projection adds H x P per step and P replaces H as output.
    uni, p = _tiny("lstm_uni_proj"), 4
    layers = (4 * h * (c + p) + h * p) + (4 * h * (p + p) + h * p)
    expect = 50 * c * F * 3 + 25 * c * c * 3 + 25 * layers + 25 * p * V
    assert macs_per_second(uni, F) == expect
    assert macs_per_second(uni, F, seconds=2.0) == pytest.approx(expect)


# torch's counter misses fused (oneDNN) LSTM kernels, so it checks the conv/linear models only.
@pytest.mark.parametrize("key", ["vgg", "vgg_dilated", "cnn", "cnn_plain_ln"])
def test_macs_match_torch_flop_counter(key):
    model = _tiny(key).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 100, F), torch.tensor([100]))
    assert macs_per_second(model, F) == pytest.approx(counter.get_total_flops() / 2)
    assert macs_per_second(model, F, seconds=2.0) == pytest.approx(macs_per_second(model, F))


def test_demo_configs_sizes():
    models = {k: build_model(load_config(CONF / f"model_{k}.yaml")["model"], 80, 30) for k in ("vgg", "lstm", "cnn")}
    params = {k: m.num_params() for k, m in models.items()}
    assert 2.5e6 <= params["vgg"] <= 6e6 and 3e6 <= params["lstm"] <= 6e6
    assert params["cnn"] <= 0.25 * params["vgg"]
    for m in models.values():
        info = model_summary(m, 80)
        assert info["frame_rate"] == pytest.approx(25.0) and info["macs_per_second"] > 0


def test_model_info_cli(tmp_path):
    cfg = tmp_path / "m.yaml"
    cfg.write_text("model:\n  name: cnn\n  channels: 16\n  num_layers: 1\n")
    res = CliRunner().invoke(cli, ["model-info", str(cfg), "--set", "model.channels=8", "--num-features", "20",
                                   "--vocab-size", "11"])
    assert res.exit_code == 0, res.output
    n = build_model({"name": "cnn", "channels": 8, "num_layers": 1}, 20, 11).num_params()
    assert "name: cnn" in res.output and f"parameters: {n:,}" in res.output
    assert "output frame rate: 25 Hz (40 ms)" in res.output and "MACs per second of audio:" in res.output
    bad = CliRunner().invoke(cli, ["model-info", str(cfg), "--set", "model.name=rnn"])
    assert bad.exit_code != 0 and "model.name must be one of cnn, lstm, oracle, specialists, vgg, got 'rnn'" in bad.output


def test_model_info_subprocess():
    out = subprocess.run([sys.executable, "-m", "kdasr", "model-info", str(CONF / "model_cnn.yaml")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "name: cnn" in out.stdout and "output frame rate: 25 Hz (40 ms)" in out.stdout
