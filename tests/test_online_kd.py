"""Online KD: teachers that run in the training process (``kd.teachers[].checkpoint``).

Their targets equal the archived ones for the same teacher and cuts; they
read exactly the (augmented, time-warped) features the student sees, or the
same augmentation of another view of the cuts; they mix with archived
teachers under every combine mode and loss; a checkpoint that does not fit
is refused before the first step, naming the file.
"""
from __future__ import annotations

import copy

import pytest
import torch
from lhotse import CutSet
from lhotse.utils import fastcopy

from kdasr.config import ConfigError
from kdasr.data.augment import Augmenter
from kdasr.data.dataset import AsrDataset
from kdasr.data.tokenizer import Tokenizer, build_char_lang, texts_from_cuts
from kdasr.distill.archive import ArchiveMeta, ArchiveMismatchError, dump_soft_labels
from kdasr.distill.strategies import KDObjective, KDTargets
from kdasr.models import build_model
from kdasr.models.checkpoint import load_checkpoint, load_model
from kdasr.train.build import train_from_config
from kdasr.train.checkpoint import save_checkpoint
from synth import synth_corpus

TIME_WARP = {"specaugment": {"time_warp_factor": 10, "p": 1.0},
             "volume": {"enabled": True, "min_db": -10.0, "max_db": 10.0}}


@pytest.fixture(scope="module")
def online(tmp_path_factory) -> dict:
    """Two trained teachers (t1 also archived at T=2) on a synthetic corpus."""
    corpus = synth_corpus(tmp_path_factory.mktemp("online"), num_train=24, num_dev=4)
    root, cfg = corpus["root"], corpus["cfg"]
    tok = Tokenizer.from_dir(root / "lang")
    for seed in (1, 2):
        t_cfg = copy.deepcopy(cfg)
        t_cfg["train"]["seed"] = seed
        train_from_config(t_cfg, root / f"t{seed}")
    model, ckpt = load_model(root / "t1" / "best.pt")
    meta = ArchiveMeta(teacher="t1", checkpoint=str(root / "t1" / "best.pt"), lang_hash=tok.hash,
                       vocab_size=ckpt["vocab_size"], temperature=2.0)
    dump_soft_labels(model, corpus["train"], root / "t1" / "softlabels", meta, progress=False)
    return {**corpus, "tok": tok}


def _teacher(setup: dict, name: str = "t1", **extra) -> dict:
    return {"name": name, "checkpoint": str(setup["root"] / name / "best.pt"), **extra}


def _batches(setup: dict, augment=None, views=None, cuts=None) -> list[dict]:
    ds = AsrDataset(setup["tok"], augment, views)
    cuts = cuts if cuts is not None else setup["train"]
    return [ds[CutSet.from_cuts(list(cuts)[i: i + 6])] for i in range(0, len(cuts), 6)]


def _student(setup: dict) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(setup["cfg"]["model"], 20, setup["tok"].vocab_size).eval()


def test_online_targets_equal_the_archived_ones(online):
    tok, train = online["tok"], online["train"]
    archived = KDTargets({"teachers": [{"name": "t1", "archive": str(online["root"] / "t1" / "softlabels")}]},
                         train, tok.hash, tok.vocab_size)
    live = KDTargets({"teachers": [_teacher(online)], "temperature": 2.0, "teacher_input": "augmented"},
                     train, tok.hash, tok.vocab_size)  # (the batches are not augmented: both inputs agree)
    student = _student(online)
    compared = 0
    for batch in _batches(online):
        _, out_lens = student(batch["features"], batch["feature_lens"])
        cuts = list(batch["cuts"])
        want = archived.targets_for_batch(cuts, out_lens, 0)
        have = live.targets_for_batch(cuts, out_lens, 0, inputs={None: (batch["features"], batch["feature_lens"])})
        assert have.shape == want.shape
        torch.testing.assert_close(have, want, atol=2e-3, rtol=1e-2)  # the archive stores float16
        compared += len(cuts)
    assert compared == len(train)


def test_online_teacher_reads_the_warped_features_the_student_reads(online):
    tok, train = online["tok"], online["train"]
    kd = KDTargets({"teachers": [_teacher(online)], "teacher_input": "augmented"}, train, tok.hash, tok.vocab_size)
    student, seen = _student(online), {}
    student.register_forward_pre_hook(lambda m, args: seen.__setitem__("student", args[0].clone()))
    kd.teachers[0].model.register_forward_pre_hook(lambda m, args: seen.__setitem__("teacher", args[0].clone()))
    augment = Augmenter(TIME_WARP, 16000, seed=3)
    plain = _batches(online)[0]["features"]
    batch = _batches(online, augment)[0]
    assert batch["features"].shape == plain.shape and not torch.allclose(batch["features"], plain)
    loss, _ = KDObjective(kd)(student, batch, step=0)
    assert torch.isfinite(loss)
    assert torch.equal(seen["teacher"], seen["student"]) and torch.equal(seen["student"], batch["features"])


def _other_view(setup: dict, tmp_path, rate: int = 8000) -> tuple[CutSet, str]:
    """The training cuts under another sampling rate (the same feature arrays): a stand-in narrowband view."""
    cuts = CutSet.from_cuts(fastcopy(c, features=fastcopy(c.features, sampling_rate=rate)) for c in setup["train"])
    path = tmp_path / f"cuts_train_{rate}.jsonl.gz"
    cuts.to_file(path)
    return cuts, str(path)


def test_a_teacher_of_another_view_reads_that_view_augmented_the_same_way(online, tmp_path):
    tok = online["tok"]
    nb, _ = _other_view(online, tmp_path)
    with pytest.raises(ArchiveMismatchError, match=r"best.pt.*16000 Hz.*8000 Hz.*kd.teachers\[\].cuts"):
        KDTargets({"teachers": [_teacher(online)]}, nb, tok.hash, tok.vocab_size)
    wb_path = str(online["paths"]["train"])
    kd = KDTargets({"teachers": [_teacher(online, cuts=wb_path)], "teacher_input": "augmented"}, nb, tok.hash,
                   tok.vocab_size)
    assert set(kd.views) == {wb_path} and not kd.views[wb_path].clean
    augment = Augmenter(TIME_WARP, 8000, seed=5)
    views = {p: (v.cuts, augment.view(16000)) for p, v in kd.views.items()}
    augment.set_epoch(2)
    batch = _batches(online, augment, views, cuts=nb)[0]
    wb_feats, wb_lens = batch["views"][wb_path]
    # same arrays in both views: the same gain, warp and masks give the same tensors
    assert torch.equal(wb_feats, batch["features"]) and torch.equal(wb_lens, batch["feature_lens"])
    seen = {}
    kd.teachers[0].model.register_forward_pre_hook(lambda m, args: seen.__setitem__("teacher", args[0]))
    loss, _ = KDObjective(kd)(_student(online), batch, step=0)
    assert torch.isfinite(loss) and seen["teacher"] is wb_feats


def test_a_clean_teacher_input_is_warped_like_the_student_but_not_masked(online):
    tok, train = online["tok"], online["train"]
    kd = KDTargets({"teachers": [_teacher(online)]}, train, tok.hash, tok.vocab_size)  # clean: the default
    assert set(kd.views) == {"<student>"} and kd.views["<student>"].clean
    seen = {}
    kd.teachers[0].model.register_forward_pre_hook(lambda m, args: seen.__setitem__("teacher", args[0]))
    augment = Augmenter({"specaugment": {"time_warp_factor": 10, "p": 1.0}}, 16000, seed=3)
    views = {k: (v.cuts, augment.view(16000, clean=v.clean)) for k, v in kd.views.items()}
    batch = _batches(online, augment, views)[0]
    plain = _batches(online)[0]["features"]
    KDObjective(kd)(_student(online), batch, step=0)
    teacher, student = seen["teacher"], batch["features"]
    assert not torch.equal(teacher, plain)  # warped...
    differs = teacher != student  # ...and unmasked: the student differs only where masked (lhotse's mask value)
    assert differs.any()
    for i in range(student.shape[0]):
        assert torch.allclose(student[i][differs[i]], teacher[i].mean().expand(int(differs[i].sum())), atol=1e-5)


@pytest.mark.parametrize("combine,extra", [
    ("switch", {}), ("multistream", {}), ("average", {}), ("weighted", {}), ("best", {}),
    ("average", {"align_spikes": True}), ("average", {"strategy": "seq", "nbest": 2}),
    ("average", {"strategy": "guided"}),
])
def test_online_and_archived_teachers_mix_under_every_combine_and_loss(online, tmp_path, combine, extra):
    cfg = copy.deepcopy(online["cfg"])
    cfg["train"]["epochs"] = 1
    cfg["kd"] = {"combine": combine, **extra, "teachers": [
        {"name": "t1", "archive": str(online["root"] / "t1" / "softlabels"), "weight": 2.0},
        {**_teacher(online, "t2"), "weight": 1.0}]}
    state = train_from_config(cfg, tmp_path / "exp")
    assert state.step > 0 and (tmp_path / "exp" / "best.pt").is_file()


def test_time_warp_trains_online_and_the_archive_refusal_names_online_kd(online, tmp_path):
    cfg = copy.deepcopy(online["cfg"])
    cfg["train"]["epochs"] = 1
    cfg["data"]["augment"] = TIME_WARP
    cfg["kd"] = {"teachers": [{"name": "t1", "archive": str(online["root"] / "t1" / "softlabels")}]}
    with pytest.raises(ConfigError, match=r"archive of t1 .*time_warp_factor = 10.*online.*checkpoint"):
        train_from_config(copy.deepcopy(cfg), tmp_path / "refused")
    cfg["kd"] = {"teachers": [_teacher(online)]}
    assert train_from_config(cfg, tmp_path / "exp").step > 0


def _changed_checkpoint(online, tmp_path, **changes) -> str:
    ckpt = load_checkpoint(online["root"] / "t1" / "best.pt")
    path = tmp_path / "changed.pt"
    save_checkpoint(path, {**ckpt, **changes})
    return str(path)


@pytest.mark.parametrize("changes,message", [
    ({"frame_shift": 0.02}, r"output frames of 0.02 s, the student's 0.04 s"),
    ({"num_features": 40}, r"40 input features, the student's 20"),
    ({"lang_hash": "other"}, r"another token set"),
])
def test_a_checkpoint_that_does_not_fit_is_refused_naming_the_file(online, tmp_path, changes, message):
    tok = online["tok"]
    path = _changed_checkpoint(online, tmp_path, **changes)
    with pytest.raises(ArchiveMismatchError, match=rf"changed.pt.*{message}"):
        KDTargets({"teachers": [{"name": "t", "checkpoint": path}]}, online["train"], tok.hash, tok.vocab_size)


def test_bad_teacher_entries_are_refused_before_loading(online, tmp_path):
    tok, train = online["tok"], online["train"]
    build_char_lang(["ZZZ QQQ"] + texts_from_cuts(train), tmp_path / "lang2")
    other = Tokenizer.from_dir(tmp_path / "lang2")
    with pytest.raises(ArchiveMismatchError, match=r"t1/best.pt.*another token set"):
        KDTargets({"teachers": [_teacher(online)]}, train, other.hash, other.vocab_size)
    with pytest.raises(ArchiveMismatchError, match=r"missing.pt does not exist"):
        KDTargets({"teachers": [{"name": "x", "checkpoint": str(tmp_path / "missing.pt")}]}, train, tok.hash)
    with pytest.raises(ConfigError, match=r"kd.teachers\[0\]: unknown key 'chekpoint' \(did you mean 'checkpoint'"):
        KDTargets({"teachers": [{"name": "x", "chekpoint": "a.pt"}]}, train, tok.hash)
    with pytest.raises(ConfigError, match=r"exactly one of 'archive'.*'checkpoint'"):
        KDTargets({"teachers": [{"name": "x", "checkpoint": "a.pt", "archive": "d"}]}, train, tok.hash)
    with pytest.raises(ArchiveMismatchError, match=r"cuts.*are not in"):
        other_cuts = tmp_path / "few.jsonl.gz"
        CutSet.from_cuts(list(train)[:3]).to_file(other_cuts)
        KDTargets({"teachers": [_teacher(online, cuts=str(other_cuts))]}, train, tok.hash, tok.vocab_size)
