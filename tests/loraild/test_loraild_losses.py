"""Loss terms against hand computations (eqs. 2, 3 and RAIL-KD)."""

from __future__ import annotations

import math

import pytest
import torch

from paperlib.loraild.losses import RailKDHead, ce_loss, ild_loss, kd_loss, mean_pool


def test_ild_loss_matches_hand_computation_with_mask():
    t = torch.tensor([[[3.0, 4.0], [1.0, 0.0], [9.0, 9.0]],
                      [[0.0, 2.0], [5.0, 5.0], [7.0, 1.0]]])
    s = torch.tensor([[[4.0, 3.0], [0.0, 1.0], [1.0, -1.0]],
                      [[0.0, -1.0], [1.0, 1.0], [2.0, 2.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]])
    # token by token: normalise both, squared distance
    d00 = (3 / 5 - 4 / 5) ** 2 + (4 / 5 - 3 / 5) ** 2  # 0.08
    d01 = (1 - 0) ** 2 + (0 - 1) ** 2  # 2
    d10 = (0 - 0) ** 2 + (1 - -1) ** 2  # 4
    d11 = 0.0  # same direction
    expected = (d00 + d01 + d10 + d11) / 4
    assert ild_loss(t, s, mask).item() == pytest.approx(expected, rel=1e-6)
    # padded positions change nothing when masked ...
    s2 = s.clone()
    s2[:, 2] = torch.tensor([-5.0, 3.0])
    assert ild_loss(t, s2, mask).item() == pytest.approx(expected, rel=1e-6)
    # ... but do in the authors' unmasked mean over every position
    d02 = sum((a / math.hypot(9, 9) - b / math.hypot(1, 1)) ** 2 for a, b in ((9, 1), (9, -1)))
    d12 = sum((a / math.hypot(7, 1) - b / math.hypot(2, 2)) ** 2 for a, b in ((7, 2), (1, 2)))
    unmasked = (d00 + d01 + d10 + d11 + d02 + d12) / 6
    assert ild_loss(t, s, None).item() == pytest.approx(unmasked, rel=1e-6)


def test_ild_loss_is_scale_invariant_and_zero_for_parallel_features():
    t = torch.randn(2, 5, 12)
    assert ild_loss(t, 3.0 * t, None).item() == pytest.approx(0.0, abs=1e-6)
    s = torch.randn(2, 5, 12)
    assert ild_loss(t, s).item() == pytest.approx(ild_loss(10 * t, 0.1 * s).item(), rel=1e-5)
    assert 0.0 <= ild_loss(t, s).item() <= 4.0
    with pytest.raises(ValueError):
        ild_loss(t, s[..., :6])


def test_kd_loss_is_kl_teacher_student_at_temperature():
    zt = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    zs = torch.tensor([[0.0, 1.0, 0.0], [1.0, -2.0, 0.0]])
    for temp in (1.0, 2.0):
        pt = torch.softmax(zt / temp, -1)
        ps = torch.softmax(zs / temp, -1)
        expected = (pt * (pt.log() - ps.log())).sum(-1).mean()
        assert kd_loss(zt, zs, temp).item() == pytest.approx(expected.item(), rel=1e-6)
    # the authors' variant (softmax first, then divide by T) would differ at T = 2
    pt, ps = torch.softmax(zt, -1) / 2, torch.softmax(zs, -1) / 2
    wrong = (pt * (pt.log() - ps.log())).sum(-1).mean()
    assert kd_loss(zt, zs, 2.0).item() != pytest.approx(wrong.item(), rel=1e-3)
    assert kd_loss(zt, zt).item() == pytest.approx(0.0, abs=1e-7)


def test_regression_losses_are_mse():
    zt, zs = torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [4.0]])
    assert kd_loss(zt, zs, regression=True).item() == pytest.approx((1 + 4) / 2)
    assert ce_loss(zs, torch.tensor([1.0, 1.0]), regression=True).item() == pytest.approx((1 + 9) / 2)
    assert ce_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([1])).item() == pytest.approx(math.log(2))


def test_mean_pool_ignores_padding():
    h = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert mean_pool(h, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 3.0]]
    assert mean_pool(h, None)[0].tolist() == pytest.approx([104 / 3, 106 / 3])


@pytest.mark.parametrize("mode", ["c", "l"])
def test_rail_kd_loss_by_hand(mode):
    torch.manual_seed(0)
    head = RailKDHead(mode, teacher_hidden=6, student_hidden=4, n_teacher=5, n_student=2, dim=3)
    t = torch.randn(7, 5, 6)
    s = torch.randn(7, 2, 4)
    sel = [1, 4]

    def dist(a, b):
        a = a / a.norm(dim=-1, keepdim=True)
        b = b / b.norm(dim=-1, keepdim=True)
        return (a - b).norm(dim=-1).mean()

    if mode == "c":
        expected = dist(head.w_t(torch.cat([t[:, 1], t[:, 4]], -1)), head.w_s(torch.cat([s[:, 0], s[:, 1]], -1)))
    else:
        expected = (dist(head.w_t[1](t[:, 1]), head.w_s[0](s[:, 0])) +
                    dist(head.w_t[4](t[:, 4]), head.w_s[1](s[:, 1]))) / 2
    assert head(t, s, sel).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError):
        head(t, s, [0, 1, 2])
