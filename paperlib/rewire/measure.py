"""The rewiring pass: every operation's costs and predictors on held-out batches.

For each batch the original model runs once (:meth:`paperlib.swap.blocks.ResidualStack.trace`
keeps ``X_0 .. X_n`` and the blocks' call arguments); that is the prefix cache: an operation
that changes blocks ``s .. e-1`` starts from the stored ``X_s``, runs its steps and then the
unchanged blocks ``e .. n-1`` (and the LM head).  No copy of the model is made and nothing
before ``s`` is recomputed.  After every batch the running sums are handed to ``checkpoint`` so
an interrupted run resumes after the last finished batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from paperlib.data.tokens import TokenBatch
from paperlib.rewire.costs import COSTS, CostSums, batch_costs, reference
from paperlib.rewire.heads import OutputHead
from paperlib.rewire.operations import Rewiring, run_steps, run_suffix
from paperlib.rewire.predictors import PREDICTORS, BatchPredictors
from paperlib.swap.blocks import ResidualStack

#: summed quantities per operation: costs, then the predictors measured per batch
SUMMED = (*COSTS, *[p for p in PREDICTORS if p != "r"])


@torch.no_grad()
def measure_rewirings(
    stack: ResidualStack,
    head: OutputHead | None,
    batches: Sequence[TokenBatch],
    ops: Sequence[Rewiring],
    A: Sequence[np.ndarray] | None = None,
    window: int = 4,
    progress: bool = True,
    state: CostSums | None = None,
    checkpoint: Callable[[CostSums], None] | None = None,
) -> CostSums:
    """Costs (:mod:`paperlib.rewire.costs`) and predictors (:mod:`paperlib.rewire.predictors`)
    of ``ops`` summed over ``batches``; ``A``: pass 1's maps (``None`` skips ``linear``).

    ``state`` resumes a run: its first ``state.batches_done`` batches are skipped.
    """
    if not ops:
        raise ValueError("no operations to measure")
    n = stack.n_layers
    bad = [op.label for op in ops if op.end > n]
    if bad:
        raise ValueError(f"operations {bad} do not fit a model of {n} layers")
    device = next(stack.model.parameters()).device
    sums = state if state is not None else CostSums(SUMMED, len(ops))
    if sums.n_ops != len(ops):
        raise ValueError(f"the saved state holds {sums.n_ops} operations, not {len(ops)}")
    todo = list(batches)[sums.batches_done:]
    bar = tqdm(total=len(todo) * len(ops), desc="rewire: costs", disable=not progress)
    for batch in todo:
        ids, mask = batch.input_ids.to(device), batch.attention_mask.to(device)
        tr = stack.trace(ids, mask)
        h = tr.hidden[n]
        ref = reference(ids, mask, head(h) if head is not None else None)
        preds = BatchPredictors(A, tr.hidden, mask, window)
        for k, op in enumerate(ops):
            x_end_new = run_steps(op.steps, tr.hidden[op.start], tr.call, stack.blocks)
            h_new = run_suffix(x_end_new, op.end, tr.call, stack.blocks)
            logits_new = head(h_new) if head is not None else None
            sums.add(k, batch_costs(ref, tr.hidden[op.start], tr.hidden[op.end], x_end_new, h, h_new, logits_new))
            sums.add(k, preds.sums(op))
            bar.update(1)
        sums.n_tokens += batch.n_tokens
        sums.n_targets += int(ref.target_mask.sum())
        if ref.nll is not None:
            sums.nll_sum += float((ref.nll * ref.target_mask).sum(dtype=torch.float64))
        sums.batches_done += 1
        if checkpoint is not None:
            checkpoint(sums)
    bar.close()
    return sums
