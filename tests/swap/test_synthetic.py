"""Section 3 / appendix A.1 of paper A on synthetic layers, plus hand checks of the indicators
(eqs. 1, 13, 14), the eq. 12 fit and the masked window mean."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from paperlib.swap import synthetic as S
from paperlib.swap.indicators import commutator, dep, largest_eigenvalues, swap_score, trans
from paperlib.swap.linear_fit import NormalEquations, TooFewTokensError, window_mean

D, K, N = 24, 6, 600


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: a second thread only adds synchronisation, badly so on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def X() -> torch.Tensor:
    return S.sample_tokens(N, D, seed=0)


# ---------------------------------------------------------------- section 3: r = 0 => delta = 0


def test_redundant_layer_gives_zero_delta_and_zero_trans(X):
    red = S.redundant_layer(D)
    Q = S.random_basis(D, 1)[:, :K]
    other = S.mlp_layer(Q, Q, scale=0.5, seed=2)
    assert torch.equal(red(X), X)  # eq. 5
    assert S.delta(red, other, X) == 0.0
    assert S.delta(other, red, X) == 0.0
    fit = S.fit_layer(red, X)
    assert np.all(fit.A == 0.0)
    assert trans(fit.A) == 0.0
    ind = S.pair_indicators(red, other, X)
    assert ind.trans_i == 0.0 and ind.r == 0.0 and ind.trans_j > 0.05


def test_redundant_pair_helper(X):
    row = S.analyse_pair(S.redundant_pair(D, K, seed=3), X)
    assert row["delta"] == 0.0 and row["Trans(i)"] == 0.0 and row["r"] == 0.0
    assert row["Trans(i+1)"] > 0.05


def test_orthogonal_linear_pair_delta_and_fitted_dep_vanish(X):
    pair = S.orthogonal_pair(D, K, "linear", scale_i=0.5, scale_j=0.5, seed=1)
    assert pair.overlap_ij < 1e-12 and pair.overlap_ji < 1e-12  # eq. 7
    assert S.delta(pair.layer_i, pair.layer_j, X) < 1e-6  # eqs. 8-11
    ind = S.pair_indicators(pair.layer_i, pair.layer_j, X)
    # the fit recovers A = P_in M P_out (up to the float32 rounding of NormalEquations.update's
    # per-batch products, ~1e-7), so the subspaces and Dep = 0 come out to that precision
    np.testing.assert_allclose(ind.fit_i.A, pair.layer_i.linear_map.numpy(), atol=1e-6)
    np.testing.assert_allclose(ind.fit_j.A, pair.layer_j.linear_map.numpy(), atol=1e-6)
    assert ind.dep_ij < 1e-6 and ind.dep_ji < 1e-6 and ind.r < 1e-6
    assert ind.trans_i > 0.2 and ind.trans_j > 0.2  # both layers do something


def test_mlp_layer_has_the_structure_of_eq6(X):
    Qi, Qo = S.random_basis(D, 4)[:, :K], S.random_basis(D, 5)[:, :K]
    layer = S.mlp_layer(Qi, Qo, scale=0.5, gain=2.0, seed=6)
    lx = layer.update(X)
    assert torch.linalg.vector_norm(lx) > 1.0
    torch.testing.assert_close(lx @ layer.P_out, lx, atol=1e-12, rtol=0)  # l(X) = l(X) P_out
    torch.testing.assert_close(layer.update(X @ layer.P_in), lx, atol=1e-12, rtol=0)  # = l'(X P_in)


def test_orthogonal_mlp_pair_delta_vanishes(X):
    pair = S.orthogonal_pair(D, K, "mlp", scale_i=0.8, scale_j=0.8, gain=2.0, seed=7)
    assert S.delta(pair.layer_i, pair.layer_j, X) < 1e-6
    x, y = S.eq21_ratios(pair.layer_i, pair.layer_j, X)
    assert float(x.max()) < 1e-12 and float(y.max()) < 1e-12


@pytest.mark.parametrize("kind", ["mlp", "linear"])
@pytest.mark.parametrize("theta,phi", [(math.pi / 2, math.pi / 2), (math.pi / 2, 0.0), (0.0, math.pi / 4)])
def test_counter_cases_have_positive_delta_and_r(X, kind, theta, phi):
    pair = S.subspace_pair(D, K, theta, phi, kind, 0.5, 0.5, seed=8)
    row = S.analyse_pair(pair, X)
    assert row["delta"] > 1e-2
    assert row["r"] > 1e-3
    assert row["||P_i^out P_i+1^in||"] == pytest.approx(abs(math.sin(theta)), abs=1e-9)
    assert row["||P_i+1^out P_i^in||"] == pytest.approx(abs(math.sin(phi)), abs=1e-9)


def test_commuting_pair_has_zero_delta_but_positive_r(X):
    row = S.analyse_pair(S.commuting_pair(D, K, seed=9), X)
    assert row["delta"] < 1e-6
    assert row["r"] > 0.05  # r = 0 => delta = 0, not the converse


# ---------------------------------------------------------------- eq. 2 vs eq. 16 and by hand


def test_delta_of_linear_layers_is_the_commutator(X):
    pair = S.subspace_pair(D, K, 0.7, 0.3, "linear", 0.5, 0.5, seed=10)
    Ai, Aj = pair.layer_i.linear_map, pair.layer_j.linear_map
    C = commutator(Ai.numpy(), Aj.numpy())
    Xn = X.numpy()
    expected = np.mean(np.linalg.norm(Xn @ C, axis=1) / np.linalg.norm(Xn, axis=1))
    assert S.delta(pair.layer_i, pair.layer_j, X) == pytest.approx(expected, rel=1e-10)
    assert S.delta_linear(Ai, Aj, X) == pytest.approx(expected, rel=1e-10)
    assert expected > 1e-2


def test_delta_by_hand_in_2d():
    Nmat = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    X = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    # [N, N^T] = diag(1, -1): rows map to (1, 0), (0, -2), (3, -4); relative norms 1, 1, 1
    assert S.delta_linear(Nmat, Nmat.T, X) == pytest.approx(1.0, abs=1e-15)
    # a token with norm 0 is left out of the mean
    X0 = torch.cat([X, torch.zeros(1, 2, dtype=torch.float64)])
    assert S.delta_linear(Nmat, Nmat.T, X0) == pytest.approx(1.0, abs=1e-15)
    # x = (1, 1): x [N, N^T] = (1, -1), ratio 1; N and N (same map) commute: 0
    assert S.delta_linear(Nmat, Nmat, X) == 0.0


def test_trans_by_hand():
    assert trans(np.diag([3.0, 4.0])) == pytest.approx(5.0 / math.sqrt(2.0), rel=1e-15)
    assert trans(np.diag([1.0, 2.0, 3.0])) == pytest.approx(math.sqrt(14.0 / 3.0), rel=1e-15)
    assert trans(np.array([[0.0, 2.0], [0.0, 0.0]])) == pytest.approx(math.sqrt(2.0), rel=1e-15)
    assert trans(np.zeros((3, 3))) == 0.0


def test_dep_by_hand():
    Nm = np.array([[0.0, 1.0], [0.0, 0.0]])
    assert dep(Nm, Nm) == 0.0  # N^2 = 0: Im(N) inside Ker(N)
    assert dep(Nm, Nm.T) == pytest.approx(1.0)  # N N^T = diag(1, 0)
    S3 = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])  # shift, S3^3 = 0
    assert dep(S3, S3) == pytest.approx(1.0)  # S3^2 = E_13, norms all 1
    assert dep(S3 @ S3, S3) == 0.0
    E11 = np.zeros((3, 3))
    E11[0, 0] = 1.0
    assert dep(np.diag([1.0, 2.0, 3.0]), E11) == pytest.approx(1.0 / 3.0)
    shear, B = np.array([[1.0, 1.0], [0.0, 1.0]]), np.diag([2.0, 0.0])
    # shear @ B = diag(2, 0); ||shear||_2 = golden ratio; so Dep = 2 / (phi * 2) = 1 / phi
    assert dep(shear, B) == pytest.approx(2.0 / (1.0 + math.sqrt(5.0)), rel=1e-12)
    # B @ shear = [[2, 2], [0, 0]] with norm 2 sqrt(2): Dep = sqrt(2) / phi
    assert dep(B, shear) == pytest.approx(2.0 * math.sqrt(2.0) / (1.0 + math.sqrt(5.0)), rel=1e-12)
    assert dep(np.zeros((2, 2)), shear) == 0.0


def test_swap_score_and_commutator_by_hand():
    assert swap_score(5.0 / math.sqrt(2.0), 2.0, 0.5, 0.25) == pytest.approx(7.5 / math.sqrt(2.0))
    assert swap_score(0.0, 2.0, 1.0, 1.0) == 0.0
    Nm = np.array([[0.0, 1.0], [0.0, 0.0]])
    np.testing.assert_array_equal(commutator(Nm, Nm.T), np.diag([1.0, -1.0]))


# ---------------------------------------------------------------- eq. 12 fit


def test_fit_recovers_known_linear_map_with_noise():
    d, n = 16, 2000
    g = torch.Generator().manual_seed(11)
    A = torch.randn(d, d, generator=g, dtype=torch.float64) / math.sqrt(d)
    Xs = torch.randn(n, d, generator=g, dtype=torch.float64)
    Y = Xs @ A + 1e-3 * torch.randn(n, d, generator=g, dtype=torch.float64)
    ne = NormalEquations(d)
    for chunk in range(0, n, 300):  # streamed in chunks, as on a real model
        ne.update(Xs[chunk:chunk + 300], Y[chunk:chunk + 300])
    fit = ne.solve()
    assert fit.n_tokens == n
    np.testing.assert_allclose(fit.A, A.numpy(), atol=5e-4)
    assert fit.r2 > 0.9999


def test_fit_layer_recovers_synthetic_linear_layer(X):
    Qi, Qo = S.random_basis(D, 12)[:, :K], S.random_basis(D, 13)[:, :K]
    layer = S.linear_layer(Qi, Qo, scale=0.4, seed=14)
    fit = S.fit_layer(layer, X)
    np.testing.assert_allclose(fit.A, layer.linear_map.numpy(), atol=1e-6)  # float32 products
    assert fit.r2 == pytest.approx(1.0, abs=1e-6)
    assert trans(fit.A) == pytest.approx(trans(layer.linear_map.numpy()), rel=1e-6)


def test_too_few_tokens_without_ridge_raises_with_needed_count():
    d = 16
    Xs = S.sample_tokens(10, d, seed=15)
    ne = NormalEquations(d)
    ne.update(Xs, Xs @ torch.eye(d, dtype=torch.float64))
    with pytest.raises(TooFewTokensError, match=r"at least 16 tokens \(got 10\)"):
        ne.solve()
    with pytest.raises(TooFewTokensError, match="at least 16 tokens"):
        S.fit_layer(S.redundant_layer(d), Xs)
    fit = ne.solve(ridge=1e-3)
    assert np.isfinite(fit.A).all() and fit.n_tokens == 10


def test_window_mean_ignores_padding():
    g = torch.Generator().manual_seed(16)
    x = torch.randn(2, 7, 3, generator=g, dtype=torch.float64)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]])  # left / right padding
    x[mask == 0] = 1e6  # padding that leaks into a mean would show
    for window in (1, 3, 4, 10):
        got = window_mean(x, mask, window=window)
        want = torch.zeros_like(x)
        for b in range(2):
            for t in range(7):
                if mask[b, t]:
                    valid = [s for s in range(max(0, t - window + 1), t + 1) if mask[b, s]]
                    want[b, t] = sum(x[b, s] for s in valid) / len(valid)
        torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-12)


# ---------------------------------------------------------------- appendix A.1


def test_bound_holds_with_bounded_ratio_and_high_rank_correlation(X):
    pairs = S.random_family(D, K, 14, seed=17, kind="mlp", p_orthogonal=0.0)
    bc = S.check_bound(pairs, X, n_resamples=200)
    ratio = bc.table["delta/r"]
    assert ratio.notna().all()
    assert math.isfinite(bc.c) and bc.c == pytest.approx(ratio.max())
    assert bc.c / bc.ratio_min < 10.0  # delta / r stays in a band across scales and overlaps
    assert bc.correlation.rho > 0.8
    assert (bc.table["delta"] <= bc.c23 * bc.table["rhs23"] + 1e-12).all()


def test_even_layer_breaks_the_bound(X):
    row = S.analyse_pair(S.even_pair(D, K, scale=0.5, seed=18), X)
    assert row["delta"] > 0.05  # the swap matters ...
    assert row["R2(i)"] < 0.2  # ... but the linear fit cannot see layer i ...
    family = S.check_bound(S.random_family(D, K, 10, seed=19, p_orthogonal=0.0), X, n_resamples=100)
    assert row["delta"] / row["r"] > 2.0 * family.c  # ... so r underestimates delta far beyond c


def test_largest_eigenvalues_by_block_lanczos_match_the_full_solver():
    """The GPU path of the spectral norms: block Lanczos + Rayleigh-Ritz."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(5, 200, 200, dtype=torch.float64, generator=g) / 15
    G = A.transpose(-1, -2) @ A
    full = torch.linalg.eigvalsh(G)[..., -1]
    assert torch.allclose(largest_eigenvalues(G), full, rtol=1e-12, atol=0)
    # a top eigenvalue repeated 20 times (more than the block) and a tiny gap below it
    U = torch.linalg.qr(torch.randn(200, 200, dtype=torch.float64, generator=g)).Q
    ev = torch.linspace(0.0, 0.5, 200, dtype=torch.float64)
    ev[-20:] = 2.0
    ev[-21] = 2.0 - 1e-9
    clustered = U @ torch.diag(ev) @ U.T
    assert largest_eigenvalues(clustered) == pytest.approx(2.0, rel=1e-12)
    # not converged within max_iter: those matrices get the full solver, same answer
    assert torch.allclose(largest_eigenvalues(G, max_iter=1), full, rtol=1e-12, atol=0)
    # a rank-deficient Gram matrix (rank 5 < block): the Krylov space stops growing, the full solver answers
    B = torch.randn(2, 200, 5, dtype=torch.float64, generator=g)
    low = B @ B.transpose(-1, -2)
    assert torch.allclose(largest_eigenvalues(low), torch.linalg.eigvalsh(low)[..., -1], rtol=1e-12, atol=0)
    # a zero map (a redundant layer) and small matrices (full solver directly)
    assert largest_eigenvalues(torch.zeros(2, 100, 100, dtype=torch.float64)).abs().max() == 0
    assert largest_eigenvalues(G[:, :10, :10]) == pytest.approx(torch.linalg.eigvalsh(G[:, :10, :10])[..., -1])


def test_block_lanczos_converges_by_itself_on_a_flat_top_spectrum(monkeypatch):
    """Gaussian Gram matrices (a dense top of the spectrum, the slow case) converge within the
    default steps to the full solver's value: the fallback to the full solver is never taken."""
    g = torch.Generator().manual_seed(4)
    A = torch.randn(3, 400, 400, dtype=torch.float64, generator=g) / 20
    G = A.transpose(-1, -2) @ A
    full = torch.linalg.eigvalsh(G)[..., -1]
    seen: list[int] = []
    real = torch.linalg.eigvalsh

    def watched(m, *a, **k):
        seen.append(m.shape[-1])
        return real(m, *a, **k)

    monkeypatch.setattr(torch.linalg, "eigvalsh", watched)
    lam = largest_eigenvalues(G)
    assert not [s for s in seen if s == 400]  # no full eigen-solve of a 400 x 400 matrix
    assert torch.allclose(lam, full, rtol=1e-12, atol=0)
    assert (lam <= full * (1 + 1e-14)).all()  # a Ritz value never exceeds lambda_max
