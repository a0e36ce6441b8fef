"""Multi-teacher targets: switch, multistream, average/weighted, best; KDTargets from a config."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import CutSet, Features, LilcomChunkyWriter, MonoCut, SupervisionSegment
from lhotse.utils import compute_num_frames

from kdasr.config import ConfigError
from kdasr.distill.align import align_to_anchor
from kdasr.distill.archive import ArchiveMeta, ArchiveMismatchError, SoftLabelWriter
from kdasr.distill.combine import (
    COMBINE_MODES,
    TeacherSwitcher,
    best_teacher_targets,
    combine_targets,
    multistream_cuts,
)
from kdasr.distill.objectives import KD_LOSSES
from kdasr.distill.strategies import KDObjective, KDTargets, resolve_kd_config
from kdasr.distill.teachers import check_augmentation_compatible

LANG = "c" * 64
V = 4


def make_cuts(root: Path, durations: list[float]) -> CutSet:
    """Cuts with real precomputed features (10 ms shift)."""
    rng = np.random.default_rng(0)
    cuts = []
    root.mkdir(parents=True, exist_ok=True)
    with LilcomChunkyWriter(root / "feats") as w:
        for i, d in enumerate(durations):
            cid = f"utt-{i}"
            T = compute_num_frames(d, 0.01, 16000)
            key = w.write(cid, rng.standard_normal((T, 3)).astype(np.float32))
            feats = Features(type="fbank", num_frames=T, num_features=3, frame_shift=0.01, sampling_rate=16000,
                             start=0.0, duration=d, storage_type=w.name, storage_path=w.storage_path, storage_key=key)
            sup = SupervisionSegment(id=cid, recording_id=cid, start=0.0, duration=d, text="x")
            cuts.append(MonoCut(id=cid, start=0.0, duration=d, channel=0, features=feats, supervisions=[sup]))
    return CutSet.from_cuts(cuts)


def expand_top2(p: np.ndarray) -> np.ndarray:
    """By hand: keep each frame's two most probable tokens, spread the rest evenly over the other two."""
    out = np.empty_like(p)
    for t, row in enumerate(p):
        top = np.argsort(-row, kind="stable")[:2]
        rest = (1.0 - row[top].sum()) / (len(row) - 2)
        out[t] = rest
        out[t, top] = row[top]
    return out


@pytest.fixture()
def setup(tmp_path: Path):
    """Two cuts (5 and 3 output frames) and two archives: A dense, B top-2, both at T=2."""
    cuts = make_cuts(tmp_path, [0.2, 0.1])
    rng = np.random.default_rng(7)
    dists = {}
    for name, k in (("A", None), ("B", 2)):
        meta = ArchiveMeta(teacher=name, checkpoint=f"exp/{name}/best.pt", lang_hash=LANG, vocab_size=V,
                           temperature=2.0, k=k)
        with SoftLabelWriter(tmp_path / name, meta, chunk_size=1) as w:
            for c in cuts:
                p = rng.dirichlet(np.ones(V), size=math.ceil(c.num_frames / 4))
                w.add(c, np.log(p))
                dists[name, c.id] = p if k is None else expand_top2(p)
        w.finalize()
    teachers = [{"name": "A", "archive": str(tmp_path / "A"), "weight": 3.0},
                {"name": "B", "archive": str(tmp_path / "B"), "weight": 1.0}]
    return cuts, teachers, dists


def padded(dists: dict, name: str, cuts, T: int) -> np.ndarray:
    out = np.zeros((len(cuts), T, V))
    for i, c in enumerate(cuts):
        p = dists[name, c.id]
        out[i, : len(p)] = p
    return out


def test_combine_targets_hand_computed() -> None:
    a = torch.tensor([[[0.5, 0.5, 0.0]]])
    b = torch.tensor([[[0.1, 0.2, 0.7]]])
    assert torch.allclose(combine_targets([a, b]), torch.tensor([[[0.3, 0.35, 0.35]]]))
    assert torch.allclose(combine_targets([a, b], [3, 1]), torch.tensor([[[0.4, 0.425, 0.175]]]))
    with pytest.raises(ValueError):
        combine_targets([a, b], [1.0])


def test_best_teacher_targets() -> None:
    good_1 = torch.tensor([[0.1, 0.8, 0.1], [0.8, 0.1, 0.1]])  # says "1"
    good_2 = torch.tensor([[0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])  # says "2"
    A = torch.stack([good_1, good_1, good_1, good_1])
    B = torch.stack([good_2, good_2, good_2, good_2])
    lens = torch.tensor([2, 2, 2, 2])
    targets = [[1], [2], [], [1, 1, 1]]  # the last needs 5 frames: infinite for both teachers
    probs, chosen = best_teacher_targets([A.log(), B.log()], lens, targets)
    assert chosen.tolist() == [0, 1, -1, -1]
    assert torch.allclose(probs[0], good_1) and torch.allclose(probs[1], good_2)
    assert torch.allclose(probs[2], (good_1 + good_2) / 2) and torch.allclose(probs[3], (good_1 + good_2) / 2)


def test_switch_round_robin_random_and_resume() -> None:
    rr = TeacherSwitcher(3, "round-robin")
    assert [rr.choose(s) for s in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    r1, r2 = TeacherSwitcher(3, "random", seed=5), TeacherSwitcher(3, "random", seed=5)
    seq = [r1.choose(s) for s in range(40)]
    assert seq == [r2.choose(s) for s in range(40)] and set(seq) == {0, 1, 2}
    assert seq != [TeacherSwitcher(3, "random", seed=6).choose(s) for s in range(40)]
    assert [r1.choose(s) for s in range(39, -1, -1)] == seq[::-1]  # step-keyed: no hidden state
    # resume: the counts after 10 steps continue like those of an uninterrupted run
    a = TeacherSwitcher(3, "random", seed=5)
    for s in range(10):
        a.note(a.choose(s))
    b = TeacherSwitcher(3, "random", seed=5)
    b.load_state_dict(a.state_dict())
    for s in range(10, 40):
        b.note(b.choose(s))
    assert b.counts == [seq.count(i) for i in range(3)]
    with pytest.raises(ValueError, match="seed"):
        TeacherSwitcher(3, "random", seed=9).load_state_dict(a.state_dict())


def test_multistream_ids(tmp_path: Path) -> None:
    cuts = make_cuts(tmp_path, [0.2, 0.1])
    ms = multistream_cuts(cuts, ["A", "B"])
    assert sorted(ms.ids) == ["utt-0#A", "utt-0#B", "utt-1#A", "utt-1#B"]
    for c in ms:
        assert c.custom["orig_id"] == c.id.split("#")[0] and c.custom["kd_teacher"] == c.id.split("#")[1]
        assert c.num_frames == cuts[c.custom["orig_id"]].num_frames
    assert all(c.custom is None or "kd_teacher" not in c.custom for c in cuts)  # originals untouched
    with pytest.raises(ValueError):
        multistream_cuts(cuts, ["A", "A"])


def kd_cfg(teachers, **kw) -> dict:
    return {"kd": {"teachers": teachers, **kw}}


def test_kd_targets_each_strategy(setup) -> None:
    cuts, teachers, dists = setup
    cl = list(cuts)
    nf = torch.tensor([5, 3])
    A, B = padded(dists, "A", cl, 5), padded(dists, "B", cl, 5)

    single = KDTargets(kd_cfg(teachers[:1]), cuts, LANG, vocab_size=V)
    got = single.targets_for_batch(cl, nf, step=0).numpy()
    np.testing.assert_allclose(got, A, rtol=3e-3, atol=1e-5)
    assert np.all(got[1, 3:] == 0)  # padding
    # any order of the batch: labels follow the cut ids
    np.testing.assert_allclose(single.targets_for_batch(cl[::-1], nf.flip(0), 0).numpy()[0, :3], A[1, :3], rtol=3e-3)

    sw = KDTargets(kd_cfg(teachers, combine="switch"), cuts, LANG)
    np.testing.assert_allclose(sw.targets_for_batch(cl, nf, step=0).numpy(), A, rtol=3e-3, atol=1e-5)
    np.testing.assert_allclose(sw.targets_for_batch(cl, nf, step=1).numpy(), B, rtol=3e-3, atol=1e-5)
    assert sw.last_teachers == ["B", "B"]

    avg = KDTargets(kd_cfg(teachers, combine="average"), cuts, LANG)
    np.testing.assert_allclose(avg.targets_for_batch(cl, nf, 0).numpy(), (A + B) / 2, rtol=3e-3, atol=1e-5)
    wtd = KDTargets(kd_cfg(teachers, combine="weighted"), cuts, LANG)
    np.testing.assert_allclose(wtd.targets_for_batch(cl, nf, 0).numpy(), 0.75 * A + 0.25 * B, rtol=3e-3, atol=1e-5)

    ms_cuts = multistream_cuts(cuts, ["A", "B"])
    ms = KDTargets(kd_cfg(teachers, combine="multistream"), ms_cuts, LANG)
    batch = [ms_cuts["utt-1#B"], ms_cuts["utt-0#A"]]
    got = ms.targets_for_batch(batch, [3, 5], 0).numpy()
    np.testing.assert_allclose(got[0, :3], B[1, :3], rtol=3e-3)
    np.testing.assert_allclose(got[1], A[0], rtol=3e-3)
    with pytest.raises(ArchiveMismatchError, match="kd_teacher"):
        ms.targets_for_batch(cl, nf, 0)

    best = KDTargets(kd_cfg(teachers, combine="best"), cuts, LANG)
    refs = [[1, 2], [1]]  # with these labels, A wins cut 0 and B wins cut 1
    got = best.targets_for_batch(cl, nf, 0, ref_targets=refs).numpy()
    for i, n in enumerate([5, 3]):
        # the reference: each teacher's CTC on the transcript, at T=1 (archive labels sharpened back from T=2)
        ctc = [float(torch.nn.functional.ctc_loss(
            torch.log_softmax(2.0 * torch.log(torch.from_numpy(X[i, :n])), -1)[:, None], torch.tensor(refs[i]),
            torch.tensor([n]), torch.tensor([len(refs[i])]), reduction="sum")) for X in (A, B)]
        want = "A" if ctc[0] <= ctc[1] else "B"
        assert best.last_teachers[i] == want == "AB"[i], (ctc, best.last_teachers)
        np.testing.assert_allclose(got[i], A[i] if want == "A" else B[i], rtol=3e-3, atol=1e-5)
    with pytest.raises(ValueError, match="ref"):
        best.targets_for_batch(cl, nf, 0)

    with pytest.raises(ArchiveMismatchError, match=r"utt-0: teacher A has 5 frames, the student 6"):
        single.targets_for_batch(cl, [6, 3], 0)


def test_align_spikes_retimes_the_other_teachers_before_combining(setup) -> None:
    cuts, teachers, dists = setup
    cl = list(cuts)
    nf = torch.tensor([5, 3])
    refs = [[1, 2], []]  # cut 1 untranscribed: its anchor's best path is aligned
    kd = KDTargets(kd_cfg(teachers, combine="average", align_spikes=True), cuts, LANG)
    got = kd.targets_for_batch(cl, nf, 0, ref_targets=refs).numpy()
    for i, c in enumerate(cl):
        a, b = dists["A", c.id], dists["B", c.id]
        want = (a + align_to_anchor(a, b, refs[i])) / 2
        np.testing.assert_allclose(got[i, : len(a)], want, rtol=3e-3, atol=1e-5)
    assert not np.allclose(got[0, :5], (dists["A", "utt-0"] + dists["B", "utt-0"]) / 2, atol=1e-3)
    # switch: the anchor's own labels are never moved, the other's are
    sw = KDTargets(kd_cfg(teachers, combine="switch", align_spikes=True), cuts, LANG)
    np.testing.assert_allclose(sw.targets_for_batch(cl, nf, 0, refs).numpy()[0], dists["A", "utt-0"], rtol=3e-3)
    np.testing.assert_allclose(sw.targets_for_batch(cl, nf, 1, refs).numpy()[0],
                               align_to_anchor(dists["A", "utt-0"], dists["B", "utt-0"], [1, 2]), rtol=3e-3)
    with pytest.raises(ConfigError, match="two"):
        KDTargets(kd_cfg(teachers[:1], align_spikes=True), cuts, LANG)


def test_seq_average_mixes_each_teachers_best_path(setup) -> None:
    """seq + weighted: every teacher's own best path at its weight, not the best path of the mean distribution."""
    cuts, teachers, dists = setup
    cl = list(cuts)
    nf = torch.tensor([5, 3])

    def best_path(p: np.ndarray) -> list[int]:
        out, prev = [], None
        for k in p.argmax(-1).tolist():
            if k != prev and k != 0:
                out.append(k)
            prev = k
        return out

    kd = KDTargets(kd_cfg(teachers, combine="weighted", strategy="seq"), cuts, LANG)
    got = kd.seq_targets(cl, nf, 0, [[1], [1]])
    for i, c in enumerate(cl):
        a, b = best_path(dists["A", c.id]), best_path(dists["B", c.id])
        want = [(a, 1.0)] if a == b else [(a, 0.75), (b, 0.25)]
        assert [h for h, _ in got[i]] == [h for h, _ in want]
        assert [w for _, w in got[i]] == pytest.approx([w for _, w in want])
    assert any(len(x) == 2 for x in got)  # the fixture's teachers disagree somewhere
    assert kd.last_teachers == ["weighted", "weighted"]
    single = KDTargets(kd_cfg(teachers[:1], strategy="seq"), cuts, LANG)
    assert single.seq_targets(cl, nf, 0, [[1], [1]]) == [[(best_path(dists["A", c.id]), 1.0)] for c in cl]


@pytest.mark.parametrize("strategy", ["frame-kl", "seq", "guided"])
def test_kd_loss_and_objective(setup, strategy: str) -> None:
    cuts, teachers, _ = setup

    class Student(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(3, V)

        def forward(self, feats, feat_lens):
            return self.proj(feats[:, ::4]), (feat_lens + 3) // 4

    kd = KDTargets(kd_cfg(teachers, combine="switch", strategy=strategy, nbest=2, skip_blank_frames=True), cuts, LANG)
    obj = KDObjective(kd)
    cl = sorted(cuts, key=lambda c: -c.duration)
    feats = torch.zeros(2, 20, 3)
    for i, c in enumerate(cl):
        f = torch.from_numpy(c.load_features())
        feats[i, : f.shape[0]] = f
    batch = {"features": feats, "feature_lens": torch.tensor([20, 10]), "cut_ids": [c.id for c in cl],
             "targets": [[1, 2], []], "cuts": CutSet.from_cuts(cl[::-1])}
    model = Student()
    loss, stats = obj(model, batch, step=3)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and model.proj.weight.grad is not None
    assert stats
    state = obj.state_dict()
    fresh = KDObjective(KDTargets(kd_cfg(teachers, combine="switch", strategy=strategy, nbest=2), cuts, LANG))
    fresh.load_state_dict(state)
    assert fresh.kd.mode.switcher.counts == kd.mode.switcher.counts == [0, 1]


def test_kd_targets_construction_checks(setup, tmp_path: Path) -> None:
    cuts, teachers, _ = setup
    with pytest.raises(ArchiveMismatchError, match="lang hash"):
        KDTargets(kd_cfg(teachers[:1]), cuts, "d" * 64)
    with pytest.raises(ConfigError, match="combine"):
        KDTargets(kd_cfg(teachers), cuts, LANG)
    with pytest.raises(ConfigError, match="lamda"):
        KDTargets(kd_cfg(teachers[:1], lamda=0.3), cuts, LANG)
    with pytest.raises(ConfigError, match="temperature"):
        KDTargets(kd_cfg(teachers[:1], temperature=1.0), cuts, LANG)
    more = make_cuts(tmp_path / "more", [0.2, 0.1, 0.3])
    with pytest.raises(ArchiveMismatchError, match="utt-2"):
        KDTargets(kd_cfg(teachers[:1]), more, LANG)
    # a teacher dumped at another temperature cannot share one T^2 with the others
    meta = ArchiveMeta(teacher="C", checkpoint="c.pt", lang_hash=LANG, vocab_size=V, temperature=1.0)
    with SoftLabelWriter(tmp_path / "C", meta) as w:
        for c in cuts:
            w.add(c, np.log(np.full((math.ceil(c.num_frames / 4), V), 1 / V)))
    w.finalize()
    with pytest.raises(ArchiveMismatchError, match="temperature"):
        KDTargets(kd_cfg(teachers + [{"name": "C", "archive": str(tmp_path / "C")}], combine="average"), cuts, LANG)


def test_augmentation_check() -> None:
    teachers = [{"name": "A", "archive": "x"}]
    masks_only = {"specaugment": {"enabled": True, "time_warp_factor": 0}}
    level_and_noise = {"volume": {"enabled": True}, "noise": {"enabled": True, "dir": "demo"}}
    check_augmentation_compatible({"kd": {"teachers": teachers}, "data": {"augment": masks_only}})
    check_augmentation_compatible({"kd": {"teachers": teachers}, "data": {"augment": level_and_noise}})
    warp = {"specaugment": {"time_warp_factor": 80}}
    check_augmentation_compatible({"data": {"augment": warp}})  # no KD: anything goes
    check_augmentation_compatible({"kd": {"teachers": teachers},
                                   "data": {"augment": {"specaugment": {"enabled": False, "time_warp_factor": 80}}}})
    with pytest.raises(ConfigError, match=r"but data.augment.specaugment.time_warp_factor = 80 moves them") as e:
        check_augmentation_compatible({"kd": {"teachers": teachers}, "data": {"augment": warp}})
    assert "precomputed copies (`kdasr prepare speed`)" in str(e.value)


def test_registries_dispatch_and_refuse_by_name(setup) -> None:
    """Every documented kind is registered; a typo names the key and the closest kind, before any archive opens."""
    assert COMBINE_MODES.names() == ("single", "switch", "multistream", "average", "weighted", "best")
    assert KD_LOSSES.names() == ("frame-kl", "seq", "guided")
    missing = [{"name": "A", "archive": "does/not/exist"}, {"name": "B", "archive": "nor/this"}]
    with pytest.raises(ConfigError, match=r"kd.combine must be one of .*got 'averge' \(did you mean 'average'\?\)"):
        resolve_kd_config(kd_cfg(missing, combine="averge"))
    with pytest.raises(ConfigError, match=r"kd.strategy .*'frame_kl' \(did you mean 'frame-kl'\?\)"):
        resolve_kd_config(kd_cfg(missing, combine="average", strategy="frame_kl"))
    with pytest.raises(ConfigError, match="kd.switch_mode"):
        resolve_kd_config(kd_cfg(missing, combine="switch", switch_mode="shuffle"))
    with pytest.raises(ConfigError, match="kd.combine single needs exactly 1 teacher"):
        resolve_kd_config(kd_cfg(missing, combine="single"))
    with pytest.raises(ConfigError, match="kd.nbest must be >= 1"):
        resolve_kd_config(kd_cfg(missing, combine="average", strategy="seq", nbest=0))
    assert resolve_kd_config(kd_cfg(missing[:1]))["combine"] == "single"
    cuts, teachers, _ = setup
    kd = KDTargets(kd_cfg(teachers, combine="multistream"), cuts, LANG)
    assert sorted(kd.training_cuts(cuts).ids) == ["utt-0#A", "utt-0#B", "utt-1#A", "utt-1#B"]
    assert KDTargets(kd_cfg(teachers, combine="average"), cuts, LANG).training_cuts(cuts) is None


def test_a_key_the_kinds_do_not_read_is_reported(caplog) -> None:
    teachers = [{"name": "A", "archive": "x"}]
    with caplog.at_level("WARNING"):
        resolve_kd_config(kd_cfg(teachers, nbest=4))
    assert "kd.nbest = 4 changes nothing: kd.strategy frame-kl and kd.combine single do not read it" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        resolve_kd_config(kd_cfg(teachers, strategy="seq", nbest=4))
    assert not caplog.text


def spiky_archive(root: Path, name: str, cuts, spike_frames: dict[str, list[int]]) -> dict:
    """An archive whose argmax is token 1 on ``spike_frames[cut id]`` and blank elsewhere."""
    meta = ArchiveMeta(teacher=name, checkpoint=f"exp/{name}/best.pt", lang_hash=LANG, vocab_size=V, temperature=2.0)
    with SoftLabelWriter(root / name, meta, chunk_size=1) as w:
        for c in cuts:
            p = np.full((math.ceil(c.num_frames / 4), V), 0.02)
            p[:, 0] = 0.94
            p[spike_frames[c.id]] = [0.02, 0.94, 0.02, 0.02]
            w.add(c, np.log(p))
        w.finalize()
    return {"name": name, "archive": str(root / name)}


def test_averaging_teachers_whose_spikes_disagree_is_warned_about(tmp_path: Path, caplog) -> None:
    cuts = make_cuts(tmp_path, [0.4, 0.2])  # 10 and 5 output frames
    early = spiky_archive(tmp_path, "early", cuts, {"utt-0": [1, 5], "utt-1": [2]})
    late = spiky_archive(tmp_path, "late", cuts, {"utt-0": [3, 7], "utt-1": [4]})
    twin = spiky_archive(tmp_path, "twin", cuts, {"utt-0": [1, 5], "utt-1": [2]})
    with caplog.at_level("WARNING"):
        KDTargets(kd_cfg([early, late], combine="average"), cuts, LANG)
    assert "teachers early and late share 0.0% of their spikes (2 cuts)" in caplog.text
    assert "kd.align_spikes=true" in caplog.text
    for cfg in (kd_cfg([early, twin], combine="weighted"),  # same spikes
                kd_cfg([early, late], combine="average", align_spikes=True),  # re-timed
                kd_cfg([early, late], combine="average", strategy="seq"),  # mixes n-best lists, not frames
                kd_cfg([early, late], combine="switch")):  # one teacher per batch
        caplog.clear()
        with caplog.at_level("WARNING"):
            KDTargets(cfg, cuts, LANG)
        assert "spikes" not in caplog.text, cfg
