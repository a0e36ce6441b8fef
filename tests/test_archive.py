"""Soft-label archive: round trips, remaining mass, resume after a kill, job splits, checks."""
from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from lhotse import CutSet, Features, LilcomChunkyWriter, MonoCut, SupervisionSegment
from lhotse.utils import compute_num_frames, fastcopy, split_sequence

from kdasr.distill.archive import (
    LOGP_FLOOR,
    ArchiveError,
    ArchiveMeta,
    ArchiveMismatchError,
    SoftLabelWriter,
    archive_info,
    check_archive,
    decode_probs,
    dequantize,
    dump_soft_labels,
    encode_log_probs,
    ensure_compatible,
    job_split,
    load_archive,
    merge_jobs,
    payload_bytes_per_frame,
    soft_targets,
)

NUM_FEATURES = 6
LANG = "a" * 64


def make_cuts(root: Path, durations: list[float], seed: int = 0, prefix: str = "utt") -> CutSet:
    """Cuts with real precomputed features (10 ms shift, snip_edges=False frame count)."""
    rng = np.random.default_rng(seed)
    cuts = []
    with LilcomChunkyWriter(root / f"feats-{prefix}-{seed}") as w:
        for i, d in enumerate(durations):
            cid = f"{prefix}-{i:03d}"
            T = compute_num_frames(d, 0.01, 16000)
            key = w.write(cid, rng.standard_normal((T, NUM_FEATURES)).astype(np.float32))
            feats = Features(
                type="fbank", num_frames=T, num_features=NUM_FEATURES, frame_shift=0.01, sampling_rate=16000,
                start=0.0, duration=d, storage_type=w.name, storage_path=w.storage_path, storage_key=key,
            )
            sup = SupervisionSegment(id=cid, recording_id=cid, start=0.0, duration=d, text="a b")
            cuts.append(MonoCut(id=cid, start=0.0, duration=d, channel=0, features=feats, supervisions=[sup]))
    return CutSet.from_cuts(cuts)


class FakeTeacher(torch.nn.Module):
    """Model contract: keeps every 4th frame (ceil(T/4) outputs) and projects it; frame-local, so padding-free."""

    def __init__(self, vocab_size: int, fail_on_call: int = 0, sharp: float = 3.0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = torch.nn.Linear(NUM_FEATURES, vocab_size)
        with torch.no_grad():
            self.proj.weight.mul_(sharp)
        self.calls = 0
        self.seen: list[int] = []
        self.fail_on_call = fail_on_call

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls += 1
        if self.fail_on_call and self.calls == self.fail_on_call:
            raise RuntimeError("simulated crash")
        self.seen.extend(int(x) for x in feat_lens)
        return self.proj(feats[:, ::4]), (feat_lens + 3) // 4


def expected_probs(teacher: FakeTeacher, cut, temperature: float) -> np.ndarray:
    x = torch.from_numpy(cut.load_features()).unsqueeze(0)
    with torch.no_grad():
        logits, _ = teacher(x, torch.tensor([x.shape[1]]))
    return torch.softmax(logits[0] / temperature, dim=-1).numpy()


def meta_for(V: int, k=None, T: float = 2.0, teacher: str = "fake") -> ArchiveMeta:
    return ArchiveMeta(teacher=teacher, checkpoint="exp/fake/best.pt", lang_hash=LANG, vocab_size=V,
                       temperature=T, k=k, view="wb")


DURS = [1.0, 0.73, 0.5, 1.21, 0.31, 0.99, 0.64]


def test_meta_yaml_round_trip(tmp_path: Path) -> None:
    m = meta_for(30, k=None)
    m.to_yaml(tmp_path / "meta.yaml")
    assert "k: dense" in (tmp_path / "meta.yaml").read_text()
    assert ArchiveMeta.from_yaml(tmp_path / "meta.yaml") == m
    m8 = meta_for(500, k=8)
    m8.to_yaml(tmp_path / "m8.yaml")
    assert ArchiveMeta.from_yaml(tmp_path / "m8.yaml").k == 8
    with pytest.raises(ValueError, match="dense"):
        meta_for(10, k=10).validate()


def test_topk_encoding_and_remaining_mass() -> None:
    rng = np.random.default_rng(1)
    V, k = 12, 3
    lp = torch.log_softmax(torch.from_numpy(rng.standard_normal((5, V)) * 3), dim=-1).numpy()
    logp, ids = encode_log_probs(lp, k)
    assert logp.dtype == np.float16 and ids.dtype == np.int16 and logp.shape == (5, k + 1)
    np.testing.assert_array_equal(ids, np.argsort(-lp, axis=1)[:, :k])
    top = np.take_along_axis(lp, ids.astype(int), axis=1)
    np.testing.assert_allclose(logp[:, :k].astype(np.float64), top, rtol=1e-3, atol=1e-3)
    rest = np.log(1.0 - np.exp(top).sum(axis=1))
    np.testing.assert_allclose(logp[:, k].astype(np.float64), rest, rtol=1e-3, atol=1e-3)
    probs = decode_probs(logp, ids, V)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    p = np.exp(lp)
    for t in range(5):
        others = np.setdiff1d(np.arange(V), ids[t])
        np.testing.assert_allclose(probs[t, ids[t]], p[t, ids[t]], rtol=3e-3)
        np.testing.assert_allclose(probs[t, others], p[t, others].sum() / (V - k), rtol=3e-3)


def test_remaining_mass_clamped_when_topk_holds_everything() -> None:
    lp = np.full((2, 4), -np.inf)
    lp[:, 1] = 0.0
    logp, ids = encode_log_probs(lp, 2)
    assert np.all(np.isfinite(logp)) and float(logp[0, 2]) == LOGP_FLOOR
    probs = decode_probs(logp, ids, 4)
    assert probs[0, 1] == pytest.approx(1.0, abs=1e-6)


def test_encode_rejects_logits() -> None:
    with pytest.raises(ValueError, match="log_softmax"):
        encode_log_probs(np.random.default_rng(0).standard_normal((3, 5)) - 5, None, "cut-x")


@pytest.mark.parametrize("k", [None, 4])
def test_dump_round_trip(tmp_path: Path, k) -> None:
    V, T = 10, 2.0
    cuts = make_cuts(tmp_path, DURS)
    teacher = FakeTeacher(V)
    out = tmp_path / "arch"
    stats = dump_soft_labels(teacher, cuts, out, meta_for(V, k, T), max_duration=2.0, chunk_size=3, progress=False)
    assert stats["done"] == len(DURS) and stats["skipped"] == 0
    meta, arch = load_archive(out)
    assert meta.num_cuts == len(DURS) and meta.k == k and meta.temperature == T
    assert sorted(arch.ids) == sorted(cuts.ids)
    for c in cuts:
        a = arch[c.id]
        got = soft_targets(a, V)
        want = expected_probs(teacher, c, T)
        assert got.shape == (math.ceil(c.num_frames / 4), V)
        if k is None:
            np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-5)
            assert a.kd_logp.shape == [got.shape[0], V] and "kd_ids" not in a.custom
        else:
            # the manifest's own load(): cut.load_kd_ids() would trim to round(duration / 0.04) frames
            ids = a.kd_ids.load().astype(int)
            np.testing.assert_array_equal(ids, np.argsort(-want, axis=1, kind="stable")[:, :k])
            np.testing.assert_allclose(np.take_along_axis(got, ids, 1), np.take_along_axis(want, ids, 1), rtol=3e-3)
    # archive paths are relative: a moved archive still loads
    moved = tmp_path / "moved"
    out.rename(moved)
    _, arch2 = load_archive(moved)
    assert soft_targets([arch2[cuts[0].id]], V)[0].shape[1] == V


@pytest.mark.parametrize("V,k,ids_dtype", [(8, None, None), (40, 8, np.uint8), (300, 8, np.int16)])
def test_compact_form_round_trip(tmp_path: Path, V, k, ids_dtype) -> None:
    cuts = make_cuts(tmp_path, DURS)
    L = 16.0
    meta = replace(meta_for(V, k), quantization="uint8", logp_range=L)
    out = tmp_path / "arch"
    teacher = FakeTeacher(V, sharp=6.0)
    dump_soft_labels(teacher, cuts, out, meta, max_duration=2.0, chunk_size=3, progress=False)
    assert "quantization: uint8" in (out / "meta.yaml").read_text() and "logp_range: 16.0" in (out / "meta.yaml").read_text()
    assert sorted(p.suffix for p in (out / "arrays").iterdir()) == [".bin"] * 3  # no HDF5 headers per cut
    m, arch = load_archive(out)
    assert (m.quantization, m.logp_range) == ("uint8", L) and m.storage.endswith("uint8 in [-16, 0]")
    for c in cuts:
        a = arch[c.id]
        assert a.kd_logp.load().dtype == np.uint8
        assert (a.kd_ids.load().dtype if k else None) == ids_dtype
        want = np.log(expected_probs(teacher, c, 2.0))
        stored = dequantize(a.kd_logp.load(), L)
        got = np.log(soft_targets(a, V))  # dequantized transparently, rows renormalised
        if k is not None:
            ids = a.kd_ids.load().astype(int)
            np.testing.assert_array_equal(ids, np.argsort(-want, axis=1, kind="stable")[:, :k])
            want, got, stored = np.take_along_axis(want, ids, 1), np.take_along_axis(got, ids, 1), stored[:, :k]
        # every stored log-prob within half a step of the teacher's, clipped to -L
        np.testing.assert_allclose(stored, np.maximum(want, -L), atol=L / 510 + 1e-4)
        keep = want > -L
        np.testing.assert_allclose(got[keep], want[keep], atol=2 * L / 510 + 1e-3)
    assert check_archive(out, cuts, LANG, vocab_size=V) == []
    info = archive_info(out)
    assert info["quantization"] == "uint8" and info["logp_range"] == L
    assert payload_bytes_per_frame(V, k, "uint8") == (V if k is None else 9 + 8 * np.dtype(ids_dtype).itemsize)
    # mixing forms in one archive is refused
    with pytest.raises(ArchiveError, match="quantization"):
        SoftLabelWriter(out, meta_for(V, k))


def test_compact_form_is_at_most_24_bytes_per_frame_at_k8(tmp_path: Path) -> None:
    assert payload_bytes_per_frame(100, 8, "uint8") == 17 and payload_bytes_per_frame(100, 8) == 34
    cuts = make_cuts(tmp_path, [2.3] * 12)  # ~58 output frames a cut, the demo's average
    sizes = {}
    for q in (None, "uint8"):
        meta = replace(meta_for(100, 8), quantization=q, logp_range=16.0 if q else None)
        dump_soft_labels(FakeTeacher(100), cuts, tmp_path / str(q), meta, progress=False)
        sizes[q] = archive_info(tmp_path / str(q))["bytes_per_frame"]
    assert sizes["uint8"] <= 24 < sizes[None], sizes


def test_compact_top_k_keeps_the_teachers_order_within_a_step() -> None:
    # token 3 beats token 1 by 0.001 nats, far less than a step (16/255): both quantize alike
    lp = np.log(np.array([[0.1, 0.3, 0.1, 0.3003, 0.1997]]))
    lp = lp - np.log(np.exp(lp).sum())
    logp, ids = encode_log_probs(lp, 2, quantization="uint8", logp_range=16.0)
    assert ids.tolist() == [[3, 1]] and logp[0, 0] == logp[0, 1]
    assert decode_probs(logp, ids, 5, logp_range=16.0).argmax() == 3


def test_compact_form_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="logp_range"):
        replace(meta_for(40, 8), quantization="uint8").validate()
    with pytest.raises(ValueError, match="quantization"):
        replace(meta_for(40, 8), quantization="int4", logp_range=8.0).validate()
    with pytest.raises(ArchiveMismatchError, match="logp_range"):
        decode_probs(np.zeros((2, 5), dtype=np.uint8), None, 5)


def test_resume_after_exception_redoes_nothing(tmp_path: Path) -> None:
    V = 8
    cuts = make_cuts(tmp_path, DURS)
    out = tmp_path / "arch"
    crashing = FakeTeacher(V, fail_on_call=4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        dump_soft_labels(crashing, cuts, out, meta_for(V), batch_size=1, chunk_size=2, progress=False)
    chunks = sorted((out / "chunks").iterdir())
    assert len(chunks) == 2  # one full chunk, plus the partial one written on the way out
    mtimes = {p: p.stat().st_mtime_ns for p in chunks}
    first = sorted(p.name for p in (out / "arrays").iterdir())
    assert first == ["chunk-1-00000.h5", "chunk-1-00001.h5"]
    done_before = set(SoftLabelWriter(out, meta_for(V), job=1).finished_ids())
    assert len(done_before) == 3
    teacher = FakeTeacher(V)
    stats = dump_soft_labels(teacher, cuts, out, meta_for(V), batch_size=1, chunk_size=2, progress=False)
    assert stats["skipped"] == 3 and stats["done"] == len(DURS) - 3 and teacher.calls == len(DURS) - 3
    for p, t in mtimes.items():
        assert p.stat().st_mtime_ns == t  # finished chunks untouched
    _, arch = load_archive(out)
    assert sorted(arch.ids) == sorted(cuts.ids)
    for c in cuts:
        np.testing.assert_allclose(soft_targets(arch[c.id]), expected_probs(teacher, c, 2.0), rtol=2e-3, atol=1e-5)


def test_hard_kill_loses_at_most_the_current_chunk(tmp_path: Path) -> None:
    V = 8
    cuts = make_cuts(tmp_path, DURS)
    out = tmp_path / "arch"
    teacher = FakeTeacher(V)
    w = SoftLabelWriter(out, meta_for(V), chunk_size=2, job=1)
    for c in list(cuts)[:3]:
        w.add(c, np.log(expected_probs(teacher, c, 2.0)))
    del w  # killed: never closed, the third cut's chunk is lost
    (out / "arrays" / ".chunk-1-00001.tmpdead.h5").write_bytes(b"half written")
    assert SoftLabelWriter(out, meta_for(V), job=1).finished_ids() == {cuts[0].id, cuts[1].id}
    assert not (out / "arrays" / ".chunk-1-00001.tmpdead.h5").exists()
    teacher.calls = 0
    stats = dump_soft_labels(teacher, cuts, out, meta_for(V), batch_size=1, chunk_size=2, progress=False)
    assert stats["skipped"] == 2 and teacher.calls == len(DURS) - 2
    assert sorted(load_archive(out)[1].ids) == sorted(cuts.ids)


def test_resume_with_other_labels_is_refused(tmp_path: Path) -> None:
    cuts = make_cuts(tmp_path, DURS[:2])
    out = tmp_path / "arch"
    dump_soft_labels(FakeTeacher(8), cuts, out, meta_for(8, T=2.0), progress=False)
    with pytest.raises(ArchiveError, match="temperature"):
        SoftLabelWriter(out, meta_for(8, T=1.0))


def test_job_split_covers_every_cut_once() -> None:
    ids = [f"c{i}" for i in range(7)]
    for n in range(1, 10):
        parts = [job_split(ids, j, n) for j in range(1, n + 1)]
        assert sorted(x for p in parts for x in p) == ids
        if n <= len(ids):  # the same slices as lhotse's CutSet.split(n) (no shuffle)
            assert parts == split_sequence(ids, n)
    with pytest.raises(ValueError):
        job_split(ids, 0, 3)


def test_jobs_then_merge(tmp_path: Path) -> None:
    V = 8
    cuts = make_cuts(tmp_path, DURS)
    out = tmp_path / "arch"
    seen = []
    for j in (1, 2, 3):
        t = FakeTeacher(V)
        stats = dump_soft_labels(t, cuts, out, meta_for(V), job=j, num_jobs=3, chunk_size=2, progress=False)
        seen.append(stats["done"])
    assert sum(seen) == len(DURS)
    with pytest.raises(ArchiveError, match="merge"):
        load_archive(out)
    merged = merge_jobs(out)
    assert sorted(merged.ids) == sorted(cuts.ids) and len(set(merged.ids)) == len(DURS)
    assert load_archive(out)[0].num_cuts == len(DURS)


def test_teacher_breaking_frame_contract(tmp_path: Path) -> None:
    class Bad(FakeTeacher):
        def forward(self, feats, feat_lens):
            logits, lens = super().forward(feats, feat_lens)
            return logits, lens - 1

    cuts = make_cuts(tmp_path, DURS[:2])
    with pytest.raises(ArchiveError, match=r"utt-00\d.*ceil\(T/4\)"):
        dump_soft_labels(Bad(8), cuts, tmp_path / "arch", meta_for(8), progress=False)


def test_info_and_checks(tmp_path: Path) -> None:
    V = 8
    cuts = make_cuts(tmp_path, DURS)
    out = tmp_path / "arch"
    dump_soft_labels(FakeTeacher(V), cuts, out, meta_for(V, k=3), progress=False)
    extra = make_cuts(tmp_path, [0.5], prefix="other")
    info = archive_info(out, list(cuts) + list(extra))
    frames = sum(math.ceil(c.num_frames / 4) for c in cuts)
    assert info["num_cuts"] == len(DURS) and info["total_frames"] == frames
    assert info["bytes_on_disk"] > 0 and info["bytes_per_frame"] == pytest.approx(info["bytes_on_disk"] / frames)
    assert info["coverage"] == {"cuts": len(DURS) + 1, "covered": len(DURS), "missing": 1,
                                "fraction": len(DURS) / (len(DURS) + 1)}

    assert check_archive(out, cuts, LANG) == []
    assert ensure_compatible(out, cuts, LANG, vocab_size=V).vocab_size == V

    probs = check_archive(out, cuts, "b" * 64)
    assert len(probs) == 1 and "lang hash" in probs[0]

    probs = check_archive(out, list(cuts) + list(extra), LANG)
    assert len(probs) == 1 and "other-000" in probs[0] and "1 of 8" in probs[0]

    # a student whose features have other frame counts (e.g. speed-perturbed): 0.5 s -> 0.56 s
    c2 = cuts[DURS.index(0.5)]
    longer = make_cuts(tmp_path, [0.56], seed=5)[0]
    moved = fastcopy(longer, id=c2.id)
    student = [moved if c.id == c2.id else c for c in cuts]
    probs = check_archive(out, student, LANG)
    assert len(probs) == 1 and c2.id in probs[0] and "archive 13, student 14 = ceil(56/4)" in probs[0]

    with pytest.raises(ArchiveMismatchError) as e:
        ensure_compatible(out, student + list(extra), "b" * 64, frame_shift=0.03)
    msg = str(e.value)
    for needle in ("lang hash", "frame shift 0.04 s, student 0.03 s", "other-000", c2.id):
        assert needle in msg


def test_multistream_copies_are_checked_by_orig_id(tmp_path: Path) -> None:
    cuts = make_cuts(tmp_path, DURS[:2])
    out = tmp_path / "arch"
    dump_soft_labels(FakeTeacher(8), cuts, out, meta_for(8), progress=False)
    copies = [fastcopy(c, id=c.id + "#t1").with_custom("orig_id", c.id) for c in cuts]
    assert check_archive(out, copies, LANG) == []
    assert os.path.isfile(out / "cuts.jsonl.gz")


def _spiky_archive(root: Path, cuts: CutSet, spikes: dict[int, int], teacher: str, V: int = 5) -> Path:
    """An archive whose every cut has blank argmax except token ``spikes[t]`` at frame t."""
    out = root / teacher
    with SoftLabelWriter(out, meta_for(V, k=None, teacher=teacher)) as w:
        for c in cuts:
            n = math.ceil(c.num_frames / 4)
            logits = np.zeros((n, V), dtype=np.float32)
            logits[:, 0] = 3.0
            for t, tok in spikes.items():
                logits[t, tok] = 6.0
            w.add(c, logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))
    merge_jobs(out)
    return out


def test_spike_agreement_of_two_archives(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from kdasr.cli.main import cli
    from kdasr.distill.archive import archive_spike_agreement

    cuts = make_cuts(tmp_path, [1.0, 0.9])  # 25 and 23 output frames
    # A spikes token 1 at frame 2 and token 2 at frame 5; B agrees on frame 2, puts token 2 one frame late,
    # and adds a token-3 spike of its own.
    a = _spiky_archive(tmp_path, cuts, {2: 1, 5: 2}, "a")
    b = _spiky_archive(tmp_path, cuts, {2: 1, 6: 2, 9: 3}, "b")
    d = archive_spike_agreement(a, b)
    assert (d["a"], d["b"], d["cuts"], d["frames"]) == ("a", "b", 2, 48)
    assert d["a_to_b"] == pytest.approx(1 / 2)
    assert d["b_to_a"] == pytest.approx(1 / 3)
    assert d["symmetric"] == pytest.approx(1 / 4)  # agree on frame 2 of 4 spiky frames, per cut
    assert archive_spike_agreement(a, a, max_cuts=1)["symmetric"] == 1.0
    # re-timed onto A's spikes, B's late token 2 lands on A's frame 5
    assert archive_spike_agreement(a, b, aligned=True)["a_to_b_aligned"] == pytest.approx(1.0)
    assert "a_to_b_aligned" not in d

    res = CliRunner().invoke(cli, ["archive", "agreement", str(a), str(b)])
    assert res.exit_code == 0, res.output
    assert "a -> b: 0.500" in res.output and "b -> a: 0.333" in res.output and "symmetric: 0.250" in res.output
    res = CliRunner().invoke(cli, ["archive", "agreement", "--aligned", str(a), str(b)])
    assert res.exit_code == 0 and "a -> b re-timed onto a: 1.000" in res.output, res.output

    other = tmp_path / "other"
    with SoftLabelWriter(other, ArchiveMeta(teacher="o", checkpoint="x", lang_hash="c" * 64, vocab_size=5,
                                            temperature=2.0, k=None, view="wb")) as w:
        w.add(cuts[0], np.full((25, 5), -math.log(5), dtype=np.float32))
    merge_jobs(other)
    res = CliRunner().invoke(cli, ["archive", "agreement", str(a), str(other)])
    assert res.exit_code != 0 and "different token sets" in res.output
