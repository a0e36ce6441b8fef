"""KD training end to end on synthetic data: archives from a trained teacher, every
combine strategy through ``train_from_config``, untranscribed cuts, mismatch errors."""
from __future__ import annotations

import copy
import dataclasses

import pytest
from lhotse import CutSet

from kdasr.config import ConfigError
from kdasr.data.tokenizer import Tokenizer, build_char_lang, texts_from_cuts
from kdasr.distill.archive import ArchiveMeta, ArchiveMismatchError, dump_soft_labels
from kdasr.models.checkpoint import load_model
from kdasr.train.build import train_from_config
from synth import make_feature_cuts, synth_corpus


@pytest.fixture(scope="module")
def kd_setup(tmp_path_factory) -> dict:
    corpus = synth_corpus(tmp_path_factory.mktemp("kd"), num_train=32, num_dev=6)
    root, cfg, train = corpus["root"], corpus["cfg"], corpus["train"]
    archives = {}
    lang_hash = Tokenizer.from_dir(root / "lang").hash
    for seed in (1, 2):
        name = f"t{seed}"
        t_cfg = copy.deepcopy(cfg)
        t_cfg["train"]["seed"] = seed
        train_from_config(t_cfg, root / name)
        model, ckpt = load_model(root / name / "best.pt")
        archives[name] = root / name / "softlabels"
        meta = ArchiveMeta(teacher=name, checkpoint=str(root / name / "best.pt"), lang_hash=lang_hash,
                           vocab_size=ckpt["vocab_size"], temperature=2.0)
        dump_soft_labels(model, train, archives[name], meta, progress=False)
    return {"root": root, "cfg": cfg, "archives": archives, "train": train}


def _kd_cfg(setup: dict, **kd) -> dict:
    cfg = copy.deepcopy(setup["cfg"])
    cfg["kd"] = {"teachers": [{"name": n, "archive": str(a)} for n, a in setup["archives"].items()], **kd}
    return cfg


@pytest.mark.parametrize("combine", ["switch", "multistream", "average", "weighted", "best"])
def test_every_combine_trains(kd_setup, tmp_path, combine):
    state = train_from_config(_kd_cfg(kd_setup, combine=combine), tmp_path / "exp")
    assert state.step > 0
    assert (tmp_path / "exp" / "best.pt").is_file()
    history = state.history
    assert all("train_kd" in h and "train_ctc" in h for h in history)
    if combine == "multistream":  # one copy of each cut per teacher: twice the cuts
        cuts = CutSet.from_file(tmp_path / "exp" / "cuts_train_multistream.jsonl.gz")
        assert len(cuts) == 2 * len(kd_setup["train"])
        assert {c.custom["kd_teacher"] for c in cuts} == {"t1", "t2"}


def test_single_teacher_kd_learns(kd_setup, tmp_path):
    cfg = _kd_cfg(kd_setup)
    cfg["kd"]["teachers"] = cfg["kd"]["teachers"][:1]
    cfg["train"]["epochs"] = 4
    state = train_from_config(cfg, tmp_path / "exp")
    kd = [h["train_kd"] for h in state.history]
    assert kd[-1] < kd[0]


def test_untranscribed_cuts_learn_from_labels_only(kd_setup, tmp_path):
    """Cuts without a transcript stay in training under KD (only the KD term sees them)."""
    cuts = []
    for i, c in enumerate(kd_setup["train"]):
        if i % 2:  # every other cut loses its transcript
            c = c.map_supervisions(lambda s: dataclasses.replace(s, text=""))
        cuts.append(c)
    path = tmp_path / "cuts_half.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    cfg = _kd_cfg(kd_setup)
    cfg["kd"]["teachers"] = cfg["kd"]["teachers"][:1]
    cfg["data"]["train_cuts"] = str(path)
    state = train_from_config(cfg, tmp_path / "exp")
    assert state.step > 0
    assert not (tmp_path / "exp" / "log" / "filtered_train.yaml").exists()
    # Without KD the same cuts are filtered out and listed by id.
    plain = copy.deepcopy(kd_setup["cfg"])
    plain["data"]["train_cuts"] = str(path)
    plain["train"]["epochs"] = 1
    train_from_config(plain, tmp_path / "plain")
    report = (tmp_path / "plain" / "log" / "filtered_train.yaml").read_text()
    assert "empty_text" in report and cuts[1].id in report


def test_wrong_token_set_stops_before_training(kd_setup, tmp_path):
    build_char_lang(["ZZZ QQQ"] + texts_from_cuts(kd_setup["train"]), tmp_path / "lang2")
    cfg = _kd_cfg(kd_setup, combine="average")
    cfg["data"]["lang_dir"] = str(tmp_path / "lang2")
    with pytest.raises(ArchiveMismatchError, match="t1"):
        train_from_config(cfg, tmp_path / "exp")
    assert not (tmp_path / "exp" / "epoch-1.pt").exists()


def test_missing_cut_in_archive_is_named(kd_setup, tmp_path):
    extra = make_feature_cuts(tmp_path / "feats", num_cuts=1, seed=9, prefix="new")
    path = tmp_path / "cuts_more.jsonl.gz"
    (kd_setup["train"] + extra).to_file(path)
    cfg = _kd_cfg(kd_setup, combine="average")
    cfg["data"]["train_cuts"] = str(path)
    with pytest.raises(ArchiveMismatchError, match="new-000"):
        train_from_config(cfg, tmp_path / "exp")


def test_time_warp_is_refused(kd_setup, tmp_path):
    cfg = _kd_cfg(kd_setup, combine="average")
    cfg["data"]["augment"] = {"specaugment": {"time_warp_factor": 80}}
    with pytest.raises(ConfigError, match="data.augment.specaugment.time_warp_factor = 80"):
        train_from_config(cfg, tmp_path / "exp")


def test_transcribed_fraction_with_and_without_kd(kd_setup, tmp_path):
    """5%-style data: without KD only the transcribed cuts train; with KD all do."""
    from kdasr.data.subsets import hold_back_transcripts, keeps_transcript

    cuts = list(kd_setup["train"])
    kept = [c.id for c in cuts if keeps_transcript(c, 0.25)]
    assert 0 < len(kept) < len(cuts)
    again = hold_back_transcripts(cuts, 0.25)
    assert [c.id for c in again if c.supervisions[0].text] == kept  # a function of the id alone

    plain = copy.deepcopy(kd_setup["cfg"])
    plain["data"]["transcribed_fraction"] = 0.25
    plain["train"]["epochs"] = 1
    train_from_config(plain, tmp_path / "plain")
    report = (tmp_path / "plain" / "log" / "filtered_train.yaml").read_text()
    assert f"kept: {len(kept)}" in report

    cfg = _kd_cfg(kd_setup)
    cfg["kd"]["teachers"] = cfg["kd"]["teachers"][:1]
    cfg["data"]["transcribed_fraction"] = 0.25
    cfg["train"]["epochs"] = 1
    train_from_config(cfg, tmp_path / "kd")
    assert not (tmp_path / "kd" / "log" / "filtered_train.yaml").exists()
    assert "only the KD term teaches them" in (tmp_path / "kd" / "log" / "train.log").read_text()
