"""Augmentation: speed copies, gain, noise, reverberation, SpecAugment, the level-invariant front end."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from lhotse import CutSet, NumpyFilesWriter, Recording, SupervisionSegment
from lhotse.utils import compute_num_frames

from kdasr.config import ConfigError
from kdasr.data.augment import (
    Augmenter,
    AugmentError,
    Noise,
    Volume,
    augment_config,
    frame_moving,
    only_speeds,
    prepare_speed,
    speed_copies,
)
from kdasr.data.features import fbank_extractor
from kdasr.data.tokenizer import texts_from_cuts
from kdasr.models import build_model
from kdasr.train.progress import StepLog, format_eta
from kdasr.train.trainer import seed_everything

SR = 16000


def _tone_noise(seconds: float, seed: int, rate: int = SR) -> np.ndarray:
    """A speech-like test signal: a few harmonics with a slow envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = rng.uniform(100, 200)
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (0.1 * x + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def _audio_cuts(root: Path, n: int = 3, rate: int = SR) -> CutSet:
    """Cuts of test audio with stored fbank features (the recipe's extractor)."""
    (root / "wav").mkdir(parents=True, exist_ok=True)
    cuts = []
    for i in range(n):
        path = root / "wav" / f"u{i}.wav"
        sf.write(path, _tone_noise(1.0 + 0.37 * i, i, rate), rate)
        cut = Recording.from_file(path, recording_id=f"u{i}").to_cut()
        cut.supervisions = [SupervisionSegment(id=f"u{i}", recording_id=f"u{i}", start=0, duration=cut.duration,
                                               text="ON OFF", speaker=f"s{i % 2}")]
        cuts.append(cut)
    with NumpyFilesWriter(root / "feats") as w:
        return CutSet.from_cuts(cuts).compute_and_store_features(fbank_extractor(rate), storage_path=root / "feats",
                                                                 storage_type=type(w))


def _noise_dir(root: Path, rate: int = SR, n: int = 2) -> Path:
    d = root / "musan" / "noise" / "free-sound"  # MUSAN's layout: found recursively
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        sf.write(d / f"noise-{i}.wav", 0.05 * np.random.default_rng(i).standard_normal(rate // 2), rate)
    return root / "musan"


def _rir_dir(root: Path, rate: int = SR) -> Path:
    d = root / "rirs"
    d.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(0.3 * rate)) / rate
    rir = np.random.default_rng(0).standard_normal(t.size) * np.exp(-t / 0.05)
    rir[0] = 1.0
    sf.write(d / "room1.wav", rir.astype(np.float32), rate)
    return d


NO_SPEC = {"specaugment": {"enabled": False}}


@pytest.fixture(scope="module")
def cuts(tmp_path_factory) -> CutSet:
    return _audio_cuts(tmp_path_factory.mktemp("aug")).to_eager()


# ------------------------------------------------------------------ speed copies
def test_speed_copies_ids_durations_and_frames(cuts, tmp_path):
    out = speed_copies(cuts, (0.9, 1.0, 1.1))
    assert len(out) == 3 * len(cuts)
    c = cuts[0]
    sp = {x.id: x for x in out}
    assert set(sp) >= {c.id, f"{c.id}_sp0.9", f"{c.id}_sp1.1"}
    slow, fast = sp[f"{c.id}_sp0.9"], sp[f"{c.id}_sp1.1"]
    assert slow.duration == pytest.approx(c.duration / 0.9, abs=1e-3)
    assert fast.duration == pytest.approx(c.duration / 1.1, abs=1e-3)
    assert slow.supervisions[0].text == c.supervisions[0].text and slow.custom["speed"] == 0.9
    # a copy's features have the frames of its own duration (what the teacher labels under its id)
    feats = slow.compute_features(fbank_extractor(SR))
    assert feats.shape[0] == compute_num_frames(slow.duration, 0.01, SR)
    assert feats.shape[0] > c.num_frames
    # token sets and LMs count each transcript once
    assert sorted(i for i, _ in texts_from_cuts(out)) == sorted(c.id for c in cuts)
    # a rerun starts from the originals: no _sp0.9_sp0.9
    again = speed_copies(out, (0.9, 1.0, 1.1))
    assert sorted(x.id for x in again) == sorted(sp)


def test_prepare_speed_rewrites_the_source_manifest(cuts, tmp_path):
    src = CutSet.from_cuts(c.drop_features() for c in cuts)
    src.to_file(tmp_path / "cuts_train.jsonl.gz")
    prepare_speed(tmp_path, "train", (0.9, 1.0, 1.1))
    prepare_speed(tmp_path, "train", (0.9, 1.0, 1.1))
    ids = [c.id for c in CutSet.from_file(tmp_path / "cuts_train.jsonl.gz")]
    assert len(ids) == 3 * len(cuts) == len(set(ids))
    with pytest.raises(AugmentError, match="cuts_dev.jsonl.gz"):
        prepare_speed(tmp_path, "dev")
    with pytest.raises(AugmentError, match="speed factors"):
        speed_copies(src, (0.9, 3.0))


def test_only_speeds_keeps_the_listed_copies(cuts):
    out = speed_copies(cuts, (0.9, 1.0, 1.1))
    assert sorted(c.id for c in only_speeds(out, [1.0])) == sorted(c.id for c in cuts)
    assert sorted(c.id for c in only_speeds(out, [1, 1.1])) == sorted([c.id for c in cuts] + [f"{c.id}_sp1.1" for c in cuts])
    with pytest.raises(AugmentError, match=r"data.speeds \[1.2\]: cuts_x.jsonl.gz holds none of them \(its speeds: \[0.9, 1.0, 1.1\]\)"):
        only_speeds(out, [1.2], "cuts_x.jsonl.gz")
    with pytest.raises(AugmentError, match="list of speed factors"):
        only_speeds(out, ["fast"])


# ------------------------------------------------------------------ volume
def test_volume_equals_audio_gain_above_the_floor(cuts):
    c = cuts[0]
    stored = c.load_features()
    ex = fbank_extractor(SR)
    for db in (-20.0, 15.0):
        audio_gain = c.drop_features().perturb_volume(10 ** (db / 20)).compute_features(ex)
        shifted = Volume.apply(stored, db)
        assert shifted.shape == stored.shape
        np.testing.assert_allclose(shifted, audio_gain, atol=2e-3)
        assert float(np.mean(shifted - stored)) == pytest.approx(db * math.log(10) / 10, rel=1e-3)


def test_volume_frames_determinism_and_range(cuts):
    cfg = {"volume": {"enabled": True, "min_db": -20, "max_db": 20}, **NO_SPEC}
    a, b = Augmenter(cfg, SR, seed=3), Augmenter(cfg, SR, seed=3)
    x, lens = a(cuts)
    assert lens.tolist() == [c.num_frames for c in cuts]
    assert torch.equal(x, b(cuts)[0])  # same seed and epoch: same gains
    # gains depend on the cut, not on the batch it is in
    single = a(CutSet.from_cuts([cuts[1]]))[0][0]
    assert torch.equal(single, x[1, : lens[1]])
    a.set_epoch(2)
    assert not torch.equal(x, a(cuts)[0])
    other = Augmenter(cfg, SR, seed=4)(cuts)[0]
    assert not torch.equal(x, other)
    offsets = [float((x[i, : lens[i]] - torch.from_numpy(c.load_features())).mean()) for i, c in enumerate(cuts)]
    assert all(abs(o) <= 20 * math.log(10) / 10 + 1e-4 for o in offsets)
    assert len({round(o, 3) for o in offsets}) == len(cuts)


# ------------------------------------------------------------------ noise and reverberation
def test_noise_from_a_musan_like_directory(cuts, tmp_path):
    cfg = {"noise": {"enabled": True, "dir": str(_noise_dir(tmp_path)), "snr": [10, 10], "p": 1.0}, **NO_SPEC}
    aug = Augmenter(cfg, SR, seed=0)
    assert len(aug.noise.recordings) == 2
    x, lens = aug(cuts)
    assert lens.tolist() == [c.num_frames for c in cuts]  # noise moves no frames
    assert torch.equal(x, Augmenter(cfg, SR, seed=0)(cuts)[0])
    clean = torch.from_numpy(cuts[0].load_features())
    assert float((x[0, : lens[0]] - clean).abs().mean()) > 0.1


def test_noise_snr_is_the_one_drawn():
    noise = Noise({"snr": [7.0, 7.0], "p": 1.0, "dir": "demo"}, 8000)  # the demo generator, at 8 kHz
    speech = _tone_noise(1.0, 0, 8000).astype(np.float64)
    mixed = noise.apply(speech, np.random.default_rng(0))
    snr = 10 * math.log10(np.mean(speech**2) / np.mean((mixed - speech) ** 2))
    assert snr == pytest.approx(7.0, abs=0.01)


def test_reverb_keeps_frames_and_changes_features(cuts, tmp_path):
    cfg = {"reverb": {"enabled": True, "dir": str(_rir_dir(tmp_path)), "p": 1.0}, **NO_SPEC}
    x, lens = Augmenter(cfg, SR, seed=0)(cuts)
    assert lens.tolist() == [c.num_frames for c in cuts]
    assert x.shape[1] == max(c.num_frames for c in cuts)
    assert float((x[0, : lens[0]] - torch.from_numpy(cuts[0].load_features())).abs().mean()) > 0.05


def test_bad_noise_and_rir_sets_are_refused_naming_the_file(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AugmentError, match=f"noise directory {empty} holds no audio"):
        Augmenter({"noise": {"enabled": True, "dir": str(empty)}}, SR)
    with pytest.raises(AugmentError, match="does not exist"):
        Augmenter({"reverb": {"enabled": True, "dir": str(tmp_path / "nope")}}, SR)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.wav").write_bytes(b"RIFF not really a wav")
    with pytest.raises(AugmentError, match=r"noise file .*broken.wav cannot be read"):
        Augmenter({"noise": {"enabled": True, "dir": str(bad)}}, SR)
    d8 = _noise_dir(tmp_path / "r8", rate=8000, n=1)
    with pytest.raises(AugmentError, match=r"noise-0.wav is at 8000 Hz but the training audio at 16000 Hz"):
        Augmenter({"noise": {"enabled": True, "dir": str(d8)}}, SR)
    with pytest.raises(AugmentError, match=r"impulse response file .*noise-0.wav is at 8000 Hz"):
        Augmenter({"reverb": {"enabled": True, "dir": str(d8)}}, SR)
    with pytest.raises(ConfigError, match="data.augment.noise.dir is required"):
        Augmenter({"noise": {"enabled": True}}, SR)


# ------------------------------------------------------------------ SpecAugment and the config
def test_specaugment_time_warp_keeps_shape_and_is_declared(cuts):
    cfg = {"specaugment": {"time_warp_factor": 20, "p": 1.0}}
    seed_everything(0)  # lhotse's SpecAugment draws from the global RNGs, which the trainer seeds and resumes
    x, lens = Augmenter(cfg, SR)(cuts)
    seed_everything(0)
    y, _ = Augmenter(cfg, SR)(cuts)
    assert torch.equal(x, y) and x.shape[1] == max(c.num_frames for c in cuts)
    assert frame_moving(cfg) == ["data.augment.specaugment.time_warp_factor = 20"]
    assert frame_moving({"volume": {"enabled": True}, "specaugment": {"time_warp_factor": 0}}) == []
    assert frame_moving({"specaugment": {"enabled": False, "time_warp_factor": 80}}) == []


def test_config_is_strict():
    assert augment_config(None)["specaugment"]["enabled"] is True
    assert augment_config({"volume": {"enabled": True}})["volume"]["enabled"] is True
    with pytest.raises(ConfigError, match=r"data.augment.volume must be a section"):
        augment_config({"volume": True})
    with pytest.raises(ConfigError, match=r"data.augment.speed: unknown augmentation"):
        augment_config({"speed": {"factors": [0.9]}})
    with pytest.raises(ConfigError, match=r"data.augment.volume.max_gain: unknown key; volume takes"):
        augment_config({"volume": {"max_gain": 3}})
    with pytest.raises(ConfigError, match=r"data.augment.noise.snr must be \[low, high\]"):
        Augmenter({"noise": {"enabled": True, "dir": "demo", "snr": [20, 5]}}, SR)
    with pytest.raises(ConfigError, match=r"data.augment.volume.p must be a number in \[0.0, 1.0\]"):
        Augmenter({"volume": {"enabled": True, "p": 2}}, SR)
    with pytest.raises(ConfigError, match="data.augment.specaugment"):
        Augmenter({"specaugment": {"time_warp_factor": 5, "num_frame_masks": -1}}, SR)


# ------------------------------------------------------------------ level-invariant front end
def test_utt_norm_makes_the_model_level_invariant():
    torch.manual_seed(0)
    feats, lens = torch.randn(2, 50, 13), torch.tensor([50, 31])
    shifted = feats + 3.45  # +15 dB
    for utt_norm in (False, True):
        model = build_model({"name": "cnn", "channels": 8, "num_layers": 1, "utt_norm": utt_norm}, 13, 6).eval()
        with torch.no_grad():
            a, b = model(feats, lens)[0], model(shifted, lens)[0]
        assert torch.allclose(a[1, :8], b[1, :8], atol=1e-4) is utt_norm
    assert model.model_cfg["utt_norm"] is True
    with pytest.raises(ValueError, match="utt_norm must be true or false"):
        build_model({"name": "cnn", "utt_norm": "yes"}, 13, 6)


# ------------------------------------------------------------------ step log
def test_step_log_lines():
    now = [0.0]
    log = StepLog(epoch=2, epoch_seconds=100.0, every_n=2, clock=lambda: now[0])
    now[0] = 1.0
    assert log.step(1, 10.0, 2.0, 1e-3) is None
    now[0] = 2.0
    line = log.step(2, 10.0, None, 1e-3)
    assert line == "epoch 2 step 2: loss 2, lr 0.001, 10.0x real time, 20% of the epoch, ETA 8s"
    assert format_eta(3725) == "1h02m" and format_eta(245) == "4m05s"


# ------------------------------------------------------------------ in the trainer
def _synth_cfg(root: Path) -> dict:
    from kdasr.data.tokenizer import build_char_lang
    from synth import make_feature_cuts

    train = make_feature_cuts(root / "feats", num_cuts=16, seed=0, prefix="tr")
    train.to_file(root / "cuts_train.jsonl.gz")
    build_char_lang(texts_from_cuts(train), root / "lang_char")
    return {
        "data": {"train_cuts": str(root / "cuts_train.jsonl.gz"), "lang_dir": str(root / "lang_char"),
                 "max_duration": 3.0, "num_buckets": 2,
                 "augment": {"volume": {"enabled": True}, "specaugment": {"time_warp_factor": 10}}},
        "model": {"name": "cnn", "channels": 16, "num_layers": 1, "utt_norm": True},
        "train": {"epochs": 1, "warmup_steps": 2, "save_every_n": 0, "keep_last_n": 0, "log_every_n": 2},
    }


def test_trainer_augments_and_logs_progress(tmp_path):
    from kdasr.models.checkpoint import load_model
    from kdasr.train.trainer import Trainer

    cfg = _synth_cfg(tmp_path)
    Trainer(cfg, tmp_path / "exp").fit()
    log = (tmp_path / "exp" / "log" / "train.log").read_text()
    assert "augmentation: volume, specaugment" in log
    assert "epoch 1 step 2: loss" in log and "x real time" in log and "ETA" in log
    model, _ = load_model(tmp_path / "exp" / "best.pt")
    assert model.utt_norm  # rebuilt from the checkpoint's model_cfg
    cfg["train"]["spec_augment"] = {"p": 0.5}
    with pytest.raises(ConfigError, match="unknown key 'train.spec_augment"):
        Trainer(cfg, tmp_path / "exp2")
