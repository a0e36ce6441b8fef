"""KD losses against hand computations: frame KL (T^2, blank elimination), CTC, sequence KD, guided CTC, spikes."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdasr.ctc import ctc_loss_hard, prefix_beam_search
from kdasr.distill.losses import (
    frame_kl,
    guide_mask,
    guided_ctc_loss,
    kd_loss_total,
    mix_nbest,
    seq_kd_loss,
    seq_kd_targets,
    spike_agreement,
)


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def teacher_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Utterance 0: 2 valid frames + 1 padded; utterance 1: 1 valid frame. V=3, blank=0."""
    p = torch.tensor(
        [
            [[0.5, 0.25, 0.25], [0.2, 0.7, 0.1], [0.0, 0.0, 1.0]],  # last row is padding
            [[0.1, 0.1, 0.8], [0.9, 0.05, 0.05], [0.9, 0.05, 0.05]],
        ]
    )
    return p, torch.tensor([2, 1])


def test_frame_kl_hand_computed_with_t2_scaling() -> None:
    p, lens = teacher_batch()
    student = torch.zeros(2, 3, 3, requires_grad=True)  # uniform at any temperature
    u = [1 / 3] * 3
    k00, k01, k10 = kl([0.5, 0.25, 0.25], u), kl([0.2, 0.7, 0.1], u), kl([0.1, 0.1, 0.8], u)
    assert k00 == pytest.approx(0.5 * math.log(1.5) + 0.5 * math.log(0.75))
    for T in (1.0, 2.0):
        got = frame_kl(student, p, lens, temperature=T, reduction="sum").detach()
        assert float(got) == pytest.approx(T * T * (k00 + k01 + k10), rel=1e-5)
    assert float(frame_kl(student, p, lens, 2.0).detach()) == pytest.approx(4 * (k00 + k01 + k10) / 2, rel=1e-5)
    assert float(frame_kl(student, p, lens, 2.0, reduction="frame").detach()) == pytest.approx(4 * (k00 + k01 + k10) / 3, rel=1e-5)
    frame_kl(student, p, lens, 2.0).backward()
    assert student.grad is not None and float(student.grad[0, 2].abs().sum()) == 0.0  # padding gets no gradient


def test_frame_kl_matches_torch_kl_div_for_a_real_student() -> None:
    torch.manual_seed(0)
    s = torch.randn(2, 4, 5)
    t = torch.softmax(torch.randn(2, 4, 5) / 3.0, dim=-1)
    lens = torch.tensor([4, 4])
    ref = F.kl_div(torch.log_softmax(s / 3.0, -1), t, reduction="sum") * 9.0
    assert float(frame_kl(s, t, lens, 3.0, reduction="sum")) == pytest.approx(float(ref), rel=1e-5)


def test_frame_kl_blank_elimination() -> None:
    p, lens = teacher_batch()
    student = torch.zeros(2, 3, 3)
    u = [1 / 3] * 3
    k01, k10 = kl([0.2, 0.7, 0.1], u), kl([0.1, 0.1, 0.8], u)
    # frame (0,0) has blank on top (0.5): dropped; padding (0,2) never counts
    got = frame_kl(student, p, lens, 1.0, skip_blank_frames=True, reduction="sum")
    assert float(got) == pytest.approx(k01 + k10, rel=1e-5)
    got = frame_kl(student, p, lens, 1.0, skip_blank_frames=True, reduction="frame")
    assert float(got) == pytest.approx((k01 + k10) / 2, rel=1e-5)
    # a threshold above 0.5 keeps the uncertain blank frame
    got = frame_kl(student, p, lens, 1.0, skip_blank_frames=True, blank_threshold=0.6, reduction="sum")
    assert float(got) == pytest.approx(kl([0.5, 0.25, 0.25], u) + k01 + k10, rel=1e-5)
    # every frame blank: zero loss that still backpropagates
    blank = torch.zeros(1, 2, 3)
    blank[..., 0] = 1.0
    s = torch.randn(1, 2, 3, requires_grad=True)
    z = frame_kl(s, blank, torch.tensor([2]), skip_blank_frames=True)
    z.backward()
    assert float(z.detach()) == 0.0


def test_ctc_loss_hard_skips_untranscribed() -> None:
    torch.manual_seed(1)
    logits = torch.randn(3, 6, 4)
    lens = torch.tensor([6, 5, 4])
    targets = [[1, 2], [], [3]]
    lp = torch.log_softmax(logits, -1)
    ref0 = F.ctc_loss(lp[0:1].transpose(0, 1), torch.tensor([1, 2]), torch.tensor([6]), torch.tensor([2]), reduction="sum")
    ref2 = F.ctc_loss(lp[2:3].transpose(0, 1), torch.tensor([3]), torch.tensor([4]), torch.tensor([1]), reduction="sum")
    total = float(ref0 + ref2)
    assert float(ctc_loss_hard(logits, lens, targets)) == pytest.approx(total / 2, rel=1e-5)
    assert float(ctc_loss_hard(logits, lens, targets, reduction="token")) == pytest.approx(total / 3, rel=1e-5)
    assert float(ctc_loss_hard(logits, lens, targets, reduction="frame")) == pytest.approx(total / 10, rel=1e-5)
    x = logits.clone().requires_grad_(True)
    z = ctc_loss_hard(x, lens, [[], [], []])
    z.backward()
    assert float(z.detach()) == 0.0
    # impossible target (more tokens than frames): zero, not inf
    assert math.isfinite(float(ctc_loss_hard(logits[:1, :2], torch.tensor([2]), [[1, 1, 1]])))


def test_kd_loss_total() -> None:
    assert float(kd_loss_total(torch.tensor(2.0), torch.tensor(4.0), 0.25)) == pytest.approx(2.5)
    with pytest.raises(ValueError):
        kd_loss_total(torch.tensor(1.0), torch.tensor(1.0), 1.5)


def test_seq_kd_best_path() -> None:
    V = 4
    path = [0, 1, 1, 0, 1, 2, 2, 0, 3]  # last frame is padding
    p = torch.full((1, len(path), V), 0.1)
    for t, k in enumerate(path):
        p[0, t, k] = 0.7
    got = seq_kd_targets(p, torch.tensor([8]), blank_id=0, nbest=1)
    assert got == [[([1, 1, 2], 1.0)]]


def test_seq_kd_nbest_posteriors() -> None:
    # two frames over {blank, a, b}; exact prefix posteriors by enumerating the 9 alignments:
    # [a]: .6*.5+.6*.1+.1*.5=.41  [a b]: .6*.4=.24  [b]: .3*.4+.3*.1+.1*.4=.19  [b a]: .15  []: .01
    p = torch.tensor([[[0.1, 0.6, 0.3], [0.1, 0.5, 0.4]]])
    hyps = prefix_beam_search(torch.log(p[0]).double().numpy(), beam=10, token_prune=3)
    want = {(1,): 0.41, (1, 2): 0.24, (2,): 0.19, (2, 1): 0.15, (): 0.01}
    assert {tuple(h): round(math.exp(s), 6) for h, s in hyps} == pytest.approx(want)
    got = seq_kd_targets(p, torch.tensor([2]), nbest=3, beam=10, token_prune=3)[0]
    assert [h for h, _ in got] == [[1], [1, 2], [2]]
    assert [w for _, w in got] == pytest.approx([0.41 / 0.84, 0.24 / 0.84, 0.19 / 0.84])


def test_seq_kd_loss_is_weighted_ctc() -> None:
    torch.manual_seed(2)
    logits = torch.randn(2, 5, 4)
    lens = torch.tensor([5, 3])
    nb = [[([1, 2], 0.75), ([1], 0.25)], [([], 1.0)]]
    lp = torch.log_softmax(logits, -1)

    def one(b: int, y: list[int]) -> float:
        return float(F.ctc_loss(lp[b : b + 1].transpose(0, 1), torch.tensor(y, dtype=torch.long),
                                lens[b : b + 1], torch.tensor([len(y)]), reduction="sum"))

    want = 0.75 * one(0, [1, 2]) + 0.25 * one(0, [1]) + one(1, [])
    assert one(1, []) == pytest.approx(-float(lp[1, :3, 0].sum()), rel=1e-5)  # empty hyp: all blanks
    assert float(seq_kd_loss(logits, lens, nb, reduction="sum")) == pytest.approx(want, rel=1e-5)
    assert float(seq_kd_loss(logits, lens, nb)) == pytest.approx(want / 2, rel=1e-5)


def test_mix_nbest_hand_computed() -> None:
    a = [[([1, 2], 0.8), ([1], 0.2)], [([3], 1.0)]]
    b = [[([1], 1.0)], [([], 1.0)]]
    got = mix_nbest([a, b], [3.0, 1.0])
    # utt 0: [1 2] .75*.8=.6, [1] .75*.2+.25=.4; utt 1: [3] .75, [] .25
    assert [h for h, _ in got[0]] == [[1, 2], [1]] and [w for _, w in got[0]] == pytest.approx([0.6, 0.4])
    assert [h for h, _ in got[1]] == [[3], []] and [w for _, w in got[1]] == pytest.approx([0.75, 0.25])
    assert mix_nbest([a, a], [1.0, 1.0]) == a
    with pytest.raises(ValueError, match="weights"):
        mix_nbest([a, b], [1.0])
    with pytest.raises(ValueError, match="utterances"):
        mix_nbest([a, b[:1]], [1.0, 1.0])
    with pytest.raises(ValueError, match=">= 0"):
        mix_nbest([a, b], [1.0, -1.0])


def test_guided_ctc_mask_and_loss() -> None:
    guide = torch.zeros(1, 5, 3)
    for t, k in enumerate([0, 2, 2, 0, 1]):
        guide[0, t, k] = 5.0
    lens = torch.tensor([4])
    M = guide_mask(guide, lens)
    want = torch.zeros(4, 3)
    want[1, 2] = want[2, 2] = 1.0  # blank frames and the padded frame (t=4) are masked out
    assert torch.equal(M[0], want)
    assert torch.equal(guide_mask(torch.softmax(guide, -1), lens), M)  # probs or logits: same mask

    torch.manual_seed(3)
    s = torch.randn(1, 5, 3, requires_grad=True)
    P = torch.softmax(s, -1)
    ctc = ctc_loss_hard(s, lens, [[2]], reduction="sum")
    loss = guided_ctc_loss(s, lens, [[2]], guide)
    assert float(loss.detach()) == pytest.approx(float((ctc - P[0, 1, 2] - P[0, 2, 2]).detach()), rel=1e-5)
    loss_f = guided_ctc_loss(s, lens, [[2]], guide, reduction="frame", guide_weight=0.5)
    assert float(loss_f.detach()) == pytest.approx(float((ctc - 0.5 * (P[0, 1, 2] + P[0, 2, 2])).detach()) / 4, rel=1e-5)
    # the guide term pulls the student's spike towards the guide's token and frame
    g = torch.autograd.grad(guided_ctc_loss(s, lens, [[]], guide), s)[0]
    assert float(g[0, 1, 2]) < 0 and float(g[0, 0].abs().sum()) == 0.0


def test_spike_agreement_hand_made() -> None:
    V = 4

    def onehot(seq: list[int]) -> torch.Tensor:
        x = torch.zeros(1, len(seq), V)
        for t, k in enumerate(seq):
            x[0, t, k] = 1.0
        return x

    a = onehot([0, 1, 1, 0, 2, 0, 3])
    b = onehot([0, 1, 0, 0, 3, 2, 3])  # the last frame agrees but is padding
    lens = torch.tensor([6])
    assert spike_agreement(a, b, lens) == pytest.approx(1 / 3)  # A spikes at 1,2,4; B agrees at 1
    assert spike_agreement(b, a, lens) == pytest.approx(1 / 3)  # B spikes at 1,4,5; A agrees at 1
    assert spike_agreement(a, b, lens, symmetric=True) == pytest.approx(1 / 4)  # 1 agree / {1,2,4,5}
    assert spike_agreement(a, a, lens) == 1.0
    assert math.isnan(spike_agreement(onehot([0, 0]), a[:, :2], torch.tensor([2])))
