"""Ensemble decoding (``kdasr decode --checkpoint A --checkpoint B``): posteriors averaged after re-timing."""
from __future__ import annotations

import torch
import yaml
from click.testing import CliRunner
from torch import nn

from kdasr.cli.main import cli
from kdasr.data.tokenizer import build_char_lang
from kdasr.decode.ensemble import EnsembleModel
from kdasr.models.checkpoint import load_checkpoint, load_model
from kdasr.train.checkpoint import save_checkpoint
from kdasr.utils.io import save_manifest
from synth import make_feature_cuts, write_checkpoint


class Fixed(nn.Module):
    """A member whose logits are given (one utterance), whatever the features."""

    num_features, frame_shift = 4, 0.04

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.w = nn.Parameter(torch.zeros(1))

    def num_params(self) -> int:
        return 1

    def forward(self, feats, lens):
        return self.logits[None], torch.tensor([self.logits.shape[0]])


def _spikes(frames: dict[int, int], T: int = 10, V: int = 4) -> torch.Tensor:
    logits = torch.full((T, V), -8.0)
    logits[:, 0] = 0.0
    for t, tok in frames.items():
        logits[t] = -8.0
        logits[t, tok] = 0.0
    return logits


def test_members_spiking_on_other_frames_are_retimed_before_averaging():
    a, b = _spikes({2: 1, 6: 2}), _spikes({3: 1, 7: 2})
    log_probs, lens = EnsembleModel([Fixed(a), Fixed(b)])(torch.zeros(1, 40, 4), torch.tensor([40]))
    p = log_probs.exp()[0]
    assert lens.tolist() == [10]
    assert p[2, 1] > 0.99 and p[6, 2] > 0.99  # both members' mass on the first member's spikes
    assert p[3, 0] > 0.99 and p[7, 0] > 0.99  # and nothing left behind on the second's
    torch.testing.assert_close(p.sum(-1), torch.ones(10))
    # the same model twice is the model itself
    same, _ = EnsembleModel([Fixed(a), Fixed(a)])(torch.zeros(1, 40, 4), torch.tensor([40]))
    torch.testing.assert_close(same[0], torch.log_softmax(a, -1))


def _test_set(tmp_path, num_cuts: int):
    """Feature cuts saved as the test set, their char lang and an (untrained) CNN checkpoint ``a.pt``."""
    cuts = make_feature_cuts(tmp_path / "feats", num_cuts=num_cuts)
    test = tmp_path / "cuts_test.jsonl.gz"
    save_manifest(cuts, test)
    tok = build_char_lang([c.supervisions[0].text for c in cuts], tmp_path / "lang")
    return cuts, test, write_checkpoint(tmp_path / "a.pt", tok)


def test_decode_of_several_checkpoints_is_one_ensemble_row(tmp_path):
    cuts, test, one = _test_set(tmp_path, 5)
    ckpt = load_checkpoint(one)
    torch.manual_seed(1)
    ckpt["model"] = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    save_checkpoint(tmp_path / "b.pt", ckpt)
    args = ["decode", "--checkpoint", str(one), "--checkpoint", str(tmp_path / "b.pt"), "--cuts", str(test),
            "--lang-dir", str(tmp_path / "lang"), "--out-dir", str(tmp_path / "ens"), "--device", "cpu"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    d = yaml.safe_load((tmp_path / "ens" / "decode.yaml").read_text())
    assert d["model"] == "ensemble(cnn+cnn)" and d["members"] == [str(one), str(tmp_path / "b.pt")]
    assert d["ref_words"] > 0 and d["num_params"] == 2 * load_model(one)[0].num_params()
    # a member of another token set is refused in one line naming it
    other = build_char_lang(["ZZZ QQQ"] + [c.supervisions[0].text for c in cuts], tmp_path / "lang2")
    write_checkpoint(tmp_path / "c.pt", other)
    res = CliRunner().invoke(cli, args[:3] + ["--checkpoint", str(tmp_path / "c.pt")] + args[5:])
    assert res.exit_code == 1 and "c.pt has lang_hash" in res.output and "Traceback" not in res.output


def test_a_missing_feature_file_is_named_with_its_cuts(tmp_path):
    """Decoding cuts whose feature file is gone: one line naming the cuts, no traceback."""
    cuts, test, ckpt = _test_set(tmp_path, 3)
    for f in (tmp_path / "feats").rglob("*"):
        if f.is_file():
            f.unlink()
    res = CliRunner().invoke(cli, ["decode", "--checkpoint", str(ckpt), "--cuts", str(test), "--lang-dir",
                                   str(tmp_path / "lang"), "--out-dir", str(tmp_path / "out"), "--device", "cpu"])
    assert res.exit_code == 1 and "cannot load the features of cuts" in res.output and cuts[0].id in res.output
