"""Streamed least squares (eq. 12) and the window mean Xhat."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paperlib.swap.linear_fit import NormalEquations, TooFewTokensError, window_mean


def regression(n=400, d=8, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) + 0.5
    A = rng.normal(size=(d, d))
    y = x @ A + noise * rng.normal(size=(n, d)) + 0.2  # offset: SST is about the mean
    return x, y, A


def test_streaming_in_chunks_equals_one_lstsq():
    x, y, _ = regression()
    ref = np.linalg.lstsq(x, y, rcond=None)[0]
    eq = NormalEquations(8)
    for lo, hi in [(0, 13), (13, 14), (14, 150), (150, 333), (333, 400)]:  # uneven chunks
        eq.update(torch.tensor(x[lo:hi], dtype=torch.float32), torch.tensor(y[lo:hi], dtype=torch.float32))
    fit = eq.solve()
    assert fit.n_tokens == 400
    assert fit.A.shape == (8, 8) and fit.A.dtype == np.float64
    x32, y32 = x.astype(np.float32).astype(np.float64), y.astype(np.float32).astype(np.float64)
    ref32 = np.linalg.lstsq(x32, y32, rcond=None)[0]
    np.testing.assert_allclose(fit.A, ref32, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fit.A, ref, atol=1e-5)  # float32 inputs, float64 sums

    one = NormalEquations(8)
    one.update(torch.tensor(x32), torch.tensor(y32))
    np.testing.assert_allclose(one.solve().A, fit.A, rtol=1e-10, atol=1e-12)


def test_r2_is_the_direct_formula():
    x, y, _ = regression(noise=1.5)
    eq = NormalEquations(8)
    eq.update(torch.tensor(x), torch.tensor(y))
    fit = eq.solve()
    A = np.linalg.lstsq(x, y, rcond=None)[0]
    r2 = 1.0 - ((y - x @ A) ** 2).sum() / ((y - y.mean(0)) ** 2).sum()
    assert 0.2 < r2 < 0.99  # a real, imperfect fit
    assert fit.r2 == pytest.approx(r2, rel=1e-9)


def test_perfect_linear_fit_has_r2_one():
    x, y, A = regression(noise=0.0)
    eq = NormalEquations(8)
    eq.update(torch.tensor(x), torch.tensor(y - 0.2))
    fit = eq.solve()
    np.testing.assert_allclose(fit.A, A, atol=1e-9)
    assert fit.r2 == pytest.approx(1.0, abs=1e-9)


def test_ridge_with_fewer_tokens_than_d():
    x, y, _ = regression(n=5, d=8)
    eq = NormalEquations(8)
    eq.update(torch.tensor(x), torch.tensor(y))
    lam = 0.1
    fit = eq.solve(ridge=lam)
    ref = np.linalg.solve(x.T @ x + lam * 5 * np.eye(8), x.T @ y)  # lambda times the token count
    np.testing.assert_allclose(fit.A, ref, rtol=1e-8, atol=1e-10)
    assert np.isfinite(fit.A).all() and np.isfinite(fit.r2)
    big = eq.solve(ridge=100.0)
    assert np.linalg.norm(big.A) < np.linalg.norm(fit.A)  # more ridge, more shrinkage


def test_too_few_tokens_says_how_many_are_needed():
    x, y, _ = regression(n=5, d=8)
    eq = NormalEquations(8)
    eq.update(torch.tensor(x), torch.tensor(y))
    with pytest.raises(TooFewTokensError, match=r"at least 8 tokens") as info:
        eq.solve()
    assert "got 5" in str(info.value) and "ridge" in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(TooFewTokensError):
        NormalEquations(4).solve()  # no tokens at all


# ----------------------------------------------------------------------------- window mean


def hand_window_mean(x, mask, window):
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            if mask[b, t] == 0:
                continue
            vals = [x[b, s] for s in range(max(0, t - window + 1), t + 1) if mask[b, s] == 1]
            out[b, t] = torch.stack(vals).mean(0)
    return out


@pytest.mark.parametrize("window", [1, 2, 4, 7, 50])
def test_window_mean_matches_hand_loop_with_left_and_right_padding(window):
    torch.manual_seed(0)
    x = torch.randn(4, 9, 3)
    mask = torch.tensor([
        [1, 1, 1, 1, 1, 1, 1, 1, 1],  # full
        [1, 1, 1, 1, 1, 0, 0, 0, 0],  # right padded
        [0, 0, 0, 1, 1, 1, 1, 1, 1],  # left padded
        [0, 0, 1, 1, 1, 1, 0, 0, 0],  # both
    ])
    got = window_mean(x, mask, window)
    torch.testing.assert_close(got, hand_window_mean(x, mask, window), rtol=1e-5, atol=1e-6)
    assert (got[mask == 0] == 0).all()


def test_window_mean_padding_does_not_leak():
    """The same tokens give the same means whatever is in the padded positions."""
    torch.manual_seed(1)
    x = torch.randn(1, 6, 4)
    mask = torch.tensor([[0, 1, 1, 1, 1, 0]])
    a = window_mean(x, mask, 4)
    y = x.clone()
    y[0, 0] = 1e6
    y[0, 5] = -1e6
    torch.testing.assert_close(window_mean(y, mask, 4), a)
    # and the left-padded row equals the unpadded sequence on its own
    torch.testing.assert_close(a[0, 1:5], window_mean(x[:, 1:5], torch.ones(1, 4), 4)[0])


def test_window_mean_long_sequence_with_large_activation_is_accurate():
    """Long sequences with a 'massive activation' channel (as in GPT-2): the running sums must not
    lose the small variations of that channel."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1024, 4, generator=g)
    x[..., 0] += 3000.0
    mask = torch.ones(2, 1024)
    got = window_mean(x, mask, 4).double()
    ref = x.double().unfold(1, 4, 1).mean(-1)  # full windows from t = 3 on
    torch.testing.assert_close(got[:, 3:], ref, rtol=0, atol=2e-3)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "4", None])
def test_bad_window_raises(bad):
    with pytest.raises(ValueError, match="window"):
        window_mean(torch.zeros(1, 3, 2), torch.ones(1, 3), bad)


def test_float64_gram_products_equal_the_float64_products_written_out():
    """``gram_products`` widens ``[x | y]`` into one float64 buffer: ``x^T [x | y]`` in float64,
    here against the product written out (float32 inputs, a rectangular y, padded zero rows)."""
    from paperlib.swap.linear_fit import gram_products

    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(300, 24, generator=g), torch.randn(300, 7, generator=g) * 1e3
    x[-5:], y[-5:] = 0.0, 0.0
    ref = x.double().T @ torch.cat([x.double(), y.double()], dim=1)
    out = gram_products(x, y, "float64")
    assert out.dtype == torch.float64 and out.shape == (24, 31)
    torch.testing.assert_close(out, ref, rtol=1e-14, atol=0)
    torch.testing.assert_close(out[:, :24], out[:, :24].T, rtol=1e-14, atol=0)  # G symmetric
