"""The literal eq. 12 (unsquared norm) fitted by IRLS, against a brute-force minimiser."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from paperlib.swap.linear_fit import window_mean
from paperlib.swap.literal_fit import collect_states, fit_layers_unsquared, fit_unsquared, flat_window_mean


def heavy_tailed(n=300, d=4, seed=0):
    """Regression whose residual norms vary a lot (a few large outliers), so that the squared and
    the unsquared objectives have clearly different minimisers."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    A = rng.normal(size=(d, d))
    noise = rng.standard_t(df=1.5, size=(n, d))
    return x, x @ A + 0.3 * noise


def objective(A_flat, x, y):
    d = x.shape[1]
    return np.linalg.norm(y - x @ A_flat.reshape(d, d), axis=1).mean()


def test_irls_matches_a_direct_minimiser_of_the_unsquared_objective():
    x, y = heavy_tailed()
    fit = fit_unsquared(torch.tensor(x), torch.tensor(y), iters=500, rel_tol=1e-13)
    ls = np.linalg.lstsq(x, y, rcond=None)[0]
    np.testing.assert_allclose(fit.A_ls, ls, atol=1e-10)  # iteration 0 is least squares
    # brute force: a generic quasi-Newton minimiser of the convex objective, from least squares
    ref = minimize(objective, ls.ravel(), args=(x, y), method="Nelder-Mead",
                   options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 200000, "maxfev": 200000})
    ref = minimize(objective, ref.x, args=(x, y), method="Powell", options={"xtol": 1e-10, "ftol": 1e-14})
    assert objective(fit.A.ravel(), x, y) <= ref.fun + 1e-9
    np.testing.assert_allclose(fit.A, ref.x.reshape(x.shape[1], -1), atol=2e-3)
    # the two readings of eq. 12 really differ on this data
    assert np.abs(fit.A - ls).max() > 0.05
    assert objective(fit.A.ravel(), x, y) < objective(ls.ravel(), x, y)


def test_objective_never_increases_and_is_reported():
    x, y = heavy_tailed(seed=1)
    fit = fit_unsquared(torch.tensor(x), torch.tensor(y), iters=40)
    path = np.array(fit.objective)
    assert len(path) >= 2
    assert np.all(np.diff(path) <= 1e-12)
    assert path[0] == pytest.approx(objective(fit.A_ls.ravel(), x, y))
    assert path[-1] == pytest.approx(objective(fit.A.ravel(), x, y))


def test_exact_linear_data_is_fitted_exactly():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 3))
    A = rng.normal(size=(3, 3))
    fit = fit_unsquared(torch.tensor(x), torch.tensor(x @ A))
    np.testing.assert_allclose(fit.A, A, atol=1e-8)


def test_bad_shapes_and_too_few_tokens_say_what_is_wrong():
    with pytest.raises(ValueError, match="at least 4 tokens"):
        fit_unsquared(torch.zeros(3, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="one shape"):
        fit_unsquared(torch.zeros(10, 4), torch.zeros(10, 3))


def test_flat_window_mean_equals_the_padded_batch_version():
    torch.manual_seed(0)
    lengths = [5, 2, 7]
    x = torch.randn(len(lengths), max(lengths), 3)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    ref = window_mean(x, mask, 4)[mask.bool()]
    rows = x[mask.bool()]
    position = (mask.cumsum(1) - 1)[mask.bool()]
    torch.testing.assert_close(flat_window_mean(rows, position, 4), ref)


def test_states_of_a_real_tiny_model_feed_one_fit_per_layer(tiny):
    from paperlib.data.tokens import batches as make_batches
    from paperlib.swap.blocks import ResidualStack

    model = tiny.model("llama")
    batches = make_batches(tiny.sequences([20, 7, 33, 12, 40]), batch_size=2, pad_id=0)
    states, position = collect_states(ResidualStack(model), batches, progress=False)
    n_real = sum(b.n_tokens for b in batches)
    assert len(states) == tiny.N_LAYERS + 1 and all(s.shape == (n_real, tiny.D) for s in states)
    fits = fit_layers_unsquared(states, position, window=4, iters=5, progress=False)
    assert len(fits) == tiny.N_LAYERS
    for f in fits:
        assert f.objective[-1] <= f.objective[0]
