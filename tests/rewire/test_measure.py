"""Rewiring by block calls against physically rebuilt models, identity layers, paper A's pass 2,
linear predictions against brute-force products, and resuming."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from paperlib.data.tokens import TokenBatch
from paperlib.rewire.costs import CostSums
from paperlib.rewire.heads import find_output_head
from paperlib.rewire.measure import SUMMED, measure_rewirings
from paperlib.rewire.operations import Parallel, delete, expand, parallel, repeat, run_steps, run_suffix, swap
from paperlib.rewire.predictors import BatchPredictors, linear_effect
from paperlib.swap.analysis import fit_layers, measure_swaps
from paperlib.swap.blocks import ResidualStack, find_blocks


class ParallelGroup(nn.Module):
    """Written independently of paperlib: blocks reading one input, updates added or outputs averaged."""

    def __init__(self, blocks, mean):
        super().__init__()
        self.group = nn.ModuleList(blocks)
        self.mean = mean

    def forward(self, x, *args, **kwargs):
        outs = [b(x, *args, **kwargs) for b in self.group]
        outs = [o[0] if isinstance(o, tuple) else o for o in outs]
        y = sum(outs) / len(outs) if self.mean else x + sum(o - x for o in outs)
        return y


def rebuilt_order(op, n):
    """The full new block order, from the operation's meaning (not its steps)."""
    order = list(range(n))
    if op.op == "swap":
        order[op.i - 1], order[op.j - 1] = order[op.j - 1], order[op.i - 1]
        return order
    if op.op == "delete":
        last = op.i if op.j is None else op.j
        return [k for k in order if not op.i - 1 <= k <= last - 1]
    if op.op == "repeat":
        return order[: op.i] + [op.i - 1] + order[op.i:]
    group = ("par", tuple(range(op.i - 1, op.j)), op.op == "parallel_mean")
    return order[: op.i - 1] + [group] + order[op.j:]


def set_blocks(model, blocks):
    """Physically replace the model's block list (and the layer count Llama reads)."""
    old = find_blocks(model)
    parent = next(m for m in model.modules() if any(c is old for c in m.children()))
    name = next(k for k, c in parent.named_children() if c is old)
    setattr(parent, name, blocks)
    cfg = model.config
    old_n = cfg.num_hidden_layers
    cfg.num_hidden_layers = len(blocks)
    return parent, name, old, old_n


OPS_4 = [swap(1, 2, 4), swap(2, 3, 4), swap(1, 4, 4), delete(2, 4), delete(2, 4, j=3), delete(1, 4, j=4),
         repeat(3, 4), parallel(2, 4), parallel(1, 4, mean=True), parallel(1, 4, j=3)]


@pytest.mark.parametrize("arch", ["gpt2", "llama", "bert"])
def test_block_calls_equal_rebuilt_model(arch, lm, encoder, batch):
    model = lm(arch) if arch != "bert" else encoder("bert")
    head = find_output_head(model)
    assert (head is None) == (arch == "bert")
    ids, mask = batch()
    stack = ResidualStack(model)
    tr = stack.trace(ids, mask)
    m = mask.bool()
    for op in OPS_4:
        x = run_steps(op.steps, tr.hidden[op.start], tr.call, stack.blocks)
        h_new = run_suffix(x, op.end, tr.call, stack.blocks)
        blocks = stack.blocks
        order = rebuilt_order(op, len(blocks))
        new = nn.ModuleList([ParallelGroup([blocks[k] for k in o[1]], o[2]) if isinstance(o, tuple) else blocks[o]
                             for o in order])
        parent, name, old, old_n = set_blocks(model, new)
        try:
            with torch.no_grad():
                out = model(input_ids=ids, attention_mask=mask, use_cache=False) if arch != "bert" else \
                    model(input_ids=ids, attention_mask=mask)
        finally:
            setattr(parent, name, old)
            model.config.num_hidden_layers = old_n
        if head is not None:
            want, got = out.logits, head(h_new)
        else:
            want, got = out.last_hidden_state, h_new
        torch.testing.assert_close(got[m], want[m], rtol=1e-4, atol=1e-4, msg=f"{arch} {op.label}")
        # the rewiring changes the output (so the comparison is not vacuous)
        ref = head(tr.hidden[-1]) if head is not None else tr.hidden[-1]
        assert (got[m] - ref[m]).abs().max() > 1e-3, op.label


def _batches(lengths=(12, 7, 10, 9), seed=0, size=2):
    from tests.rewire.conftest import padded

    ids, mask = padded(lengths, seed)
    return [TokenBatch(ids[k:k + size], mask[k:k + size]) for k in range(0, len(lengths), size)]


def _table(sums: CostSums, ops):
    means = sums.means()
    return {op.label: {k: float(means[k][n]) for k in SUMMED} for n, op in enumerate(ops)}


def make_identity(model, layer0: int):
    """Zero the output projections of block ``layer0`` (0-based) so it returns its input exactly."""
    block = find_blocks(model)[layer0]
    with torch.no_grad():
        for name, p in block.named_parameters():
            if any(k in name for k in ("o_proj", "down_proj", "attn.c_proj", "mlp.c_proj")):
                p.zero_()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_identity_layer_costs_nothing(arch, lm):
    model = lm(arch)
    make_identity(model, 1)  # layer 2 (1-based)
    stack = ResidualStack(model)
    ops = [delete(2, 4), swap(1, 2, 4), swap(2, 3, 4), parallel(1, 4), parallel(2, 4), delete(3, 4)]
    sums = measure_rewirings(stack, find_output_head(model), _batches(), ops, progress=False)
    t = _table(sums, ops)
    for label in ("delete(2)", "swap(1, 2)", "swap(2, 3)", "parallel(1, 2)", "parallel(2, 3)"):
        assert abs(t[label]["kl"]) < 1e-6 and abs(t[label]["dnll"]) < 1e-5, (label, t[label])
        assert t[label]["delta_out"] < 1e-5, (label, t[label])
    assert t["delete(2)"]["kl"] == 0.0 and t["delete(2)"]["dnll"] == 0.0  # bit-identical path
    assert t["delete(3)"]["kl"] > 1e-4 and abs(t["delete(3)"]["dnll"]) > 1e-5  # a real layer costs


def test_adjacent_swaps_equal_paper_a_pass_2(lm):
    """delta and linear of adjacent swaps are pass 2's delta (eq. 2) and delta' (eq. 16)."""
    model = lm("llama")
    stack = ResidualStack(model)
    batches = _batches(lengths=(30,) * 8, size=4)
    fit = fit_layers(stack, batches, window=4, ridge=1e-3, progress=False)
    ref = measure_swaps(stack, batches, fit, window=4, progress=False)
    ops = expand(["swap"], stack.n_layers)
    sums = measure_rewirings(stack, find_output_head(model), batches, ops, fit.A, window=4, progress=False)
    means = sums.means()
    np.testing.assert_allclose(means["delta"], ref.delta, rtol=1e-5)
    np.testing.assert_allclose(means["linear"], ref.delta_lin, rtol=1e-3)


def test_linear_effect_equals_brute_force_products():
    rng = np.random.default_rng(0)
    n, d = 5, 6
    A = [rng.normal(scale=0.3, size=(d, d)) for _ in range(n)]
    eye = np.eye(d)

    def full_product(order):
        P = eye
        for o in order:
            P = P @ (eye + (sum(A[k] for k in o[1]) / (len(o[1]) if o[2] else 1) if isinstance(o, tuple) else A[o]))
        return P

    ops = [swap(1, 2, n), swap(2, 5, n), delete(3, n), delete(2, n, j=4), parallel(1, n), parallel(3, n, mean=True),
           parallel(2, n, j=4), repeat(4, n)]
    X0 = rng.normal(size=(7, d))
    for op in ops:
        got_full = X0 @ full_product(rebuilt_order(op, n)) - X0 @ full_product(range(n))
        via_span = X0 @ full_product(range(op.start)) @ linear_effect(op, A) @ full_product(range(op.end, n))
        np.testing.assert_allclose(via_span, got_full, atol=1e-10, err_msg=op.label)
    # an adjacent swap leaves the commutator (eq. 16)
    np.testing.assert_allclose(linear_effect(swap(2, 3, n), A), A[2] @ A[1] - A[1] @ A[2], atol=1e-12)


class LinearLayer(nn.Module):
    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(torch.as_tensor(A, dtype=torch.float32), requires_grad=False)

    def forward(self, x, **kwargs):
        return x + x @ self.A


class LinearStack(nn.Module):
    """An embedding and residual layers ``X -> X + X A_k``: a model whose linear fit is exact."""

    def __init__(self, A, vocab=100):
        super().__init__()
        d = A[0].shape[0]
        self.embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList([LinearLayer(a) for a in A])

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x, attention_mask=attention_mask)
        return x


def test_linear_prediction_is_exact_for_linear_layers():
    """With linear layers and window 1 (Xhat = X), the prediction is the measured delta."""
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    n, d = 5, 8
    A = [rng.normal(scale=0.3, size=(d, d)) for _ in range(n)]
    stack = ResidualStack(LinearStack(A))
    ops = expand(["swap_all", "delete", "delete_span", "parallel", "parallel_mean", "repeat"], n)
    sums = measure_rewirings(stack, None, _batches(), ops, A, window=1, progress=False)
    means = sums.means()
    np.testing.assert_allclose(means["linear"], means["delta"], rtol=1e-4)
    assert (means["delta"] > 1e-3).all()


def test_predictor_baselines_over_the_span(lm, batch):
    """block influence / angular distance / relative update read X_s and X_e of the changed span."""
    model = lm("gpt2")
    ids, mask = batch()
    tr = ResidualStack(model).trace(ids, mask)
    preds = BatchPredictors(None, tr.hidden, mask)
    op = swap(1, 3, 4)  # changes blocks 0..2: X_0 -> X_3
    s = preds.sums(op)
    m = mask.bool()
    x0, x3 = tr.hidden[0][m], tr.hidden[3][m]
    cos = torch.nn.functional.cosine_similarity(x0, x3, dim=-1)
    assert s["block_influence"] == pytest.approx(float((1 - cos).sum()), rel=1e-5)
    assert s["relative_update"] == pytest.approx(float(((x3 - x0).norm(dim=-1) / x0.norm(dim=-1)).sum()), rel=1e-5)
    assert "linear" not in s


def test_interrupted_run_resumes_to_the_same_sums(lm):
    model = lm("gpt2")
    stack = ResidualStack(model)
    head = find_output_head(model)
    ops = expand(["swap", "delete"], stack.n_layers)
    batches = _batches()
    full = measure_rewirings(stack, head, batches, ops, progress=False)
    saved = []

    def stop_after_first(s):
        saved.append(s.state())
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        measure_rewirings(stack, head, batches, ops, progress=False, checkpoint=stop_after_first)
    resumed = measure_rewirings(stack, head, batches, ops, progress=False, state=CostSums.from_state(saved[0]))
    assert resumed.batches_done == len(batches) == full.batches_done
    np.testing.assert_allclose(resumed.sums, full.sums, rtol=1e-6)
    assert resumed.n_tokens == full.n_tokens
