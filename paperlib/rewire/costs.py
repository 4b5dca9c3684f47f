"""What a rewiring costs, measured on held-out tokens (chapter 05).

For one batch with original states ``X_0 .. X_n`` and a rewiring that replaces blocks
``s .. e-1`` (:mod:`paperlib.rewire.operations`), let ``X'_e`` be the rewired span's output and
``X'_n`` the output of the unchanged suffix run on it.  Per real token ``t``:

- ``delta = ||X'_{e,t} - X_{e,t}|| / ||X_{s,t}||``: paper A's eq. 2 generalised to any span (for
  an adjacent swap it is eq. 2 itself);
- ``delta_out = ||X'_{n,t} - X_{n,t}|| / ||X_{n,t}||``: the change of the model's last hidden
  state (the only output cost of an encoder);

and, for causal LMs, with ``p = softmax(head(X_n))`` and ``q = softmax(head(X'_n))``:

- ``kl = KL(p_t || q_t) = sum_v p_{t,v} (log p_{t,v} - log q_{t,v})`` over every real token;
- ``dnll = -log q_t(y_{t+1}) + log p_t(y_{t+1})`` over the tokens whose next token is real, so the
  mean is the change of the mean negative log-likelihood (``exp`` of the mean NLL is perplexity).

:class:`CostSums` keeps per-operation sums in float64 and divides by the token counts at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

#: cost columns of the table, in order
COSTS = ("delta", "delta_out", "kl", "dnll")


def rel_norm(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``||num_t|| / ||den_t||`` per token (last dimension), 0 where ``den`` is 0 (padding)."""
    return num.float().norm(dim=-1) / den.float().norm(dim=-1).clamp_min(1e-12)


@dataclass
class Reference:
    """What the original model gives on one batch: log-probabilities and next-token targets."""

    mask: torch.Tensor  # (batch, seq) float, 1 = real token
    target_mask: torch.Tensor  # (batch, seq - 1) float, 1 where token t and t+1 are real
    targets: torch.Tensor  # (batch, seq - 1) the next token ids
    p: torch.Tensor | None  # (batch, seq, vocab) next-token probabilities, None without an LM head
    p_logp: torch.Tensor | None  # (batch, seq) sum_v p log p (minus the entropy)
    nll: torch.Tensor | None  # (batch, seq - 1) the original model's NLL per position


def next_token_nll(logp: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``-log p_t(y_{t+1})`` for positions ``0 .. seq-2``."""
    return -logp[:, :-1].gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def reference(input_ids: torch.Tensor, mask: torch.Tensor, logits: torch.Tensor | None) -> Reference:
    m = mask.float()
    targets = input_ids[:, 1:]
    target_mask = m[:, :-1] * m[:, 1:]
    if logits is None:
        return Reference(m, target_mask, targets, None, None, None)
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    return Reference(m, target_mask, targets, p, (p * logp).sum(-1), next_token_nll(logp, targets))


def batch_costs(
    ref: Reference,
    x_start: torch.Tensor,
    x_end: torch.Tensor,
    x_end_new: torch.Tensor,
    h: torch.Tensor,
    h_new: torch.Tensor,
    logits_new: torch.Tensor | None,
) -> dict[str, float]:
    """Sums over this batch's real tokens of every cost (divide by the counts of :class:`CostSums`)."""
    m = ref.mask
    out = {
        "delta": float((rel_norm(x_end_new - x_end, x_start) * m).sum(dtype=torch.float64)),
        "delta_out": float((rel_norm(h_new - h, h) * m).sum(dtype=torch.float64)),
    }
    if ref.p is not None and logits_new is not None:
        logq = torch.log_softmax(logits_new.float(), dim=-1)
        kl = ref.p_logp - (ref.p * logq).sum(-1)
        out["kl"] = float((kl * m).sum(dtype=torch.float64))
        dnll = next_token_nll(logq, ref.targets) - ref.nll
        out["dnll"] = float((dnll * ref.target_mask).sum(dtype=torch.float64))
    return out


@dataclass
class CostSums:
    """Running sums per operation (rows) and metric (columns), with the token counts.

    ``state()`` / ``from_state()`` make it JSON-serialisable, so a run can resume after the last
    finished batch.
    """

    names: tuple[str, ...]
    n_ops: int
    sums: np.ndarray = field(init=False)
    n_tokens: int = 0
    n_targets: int = 0
    nll_sum: float = 0.0  # the original model's summed NLL (for its mean NLL / perplexity)
    batches_done: int = 0

    def __post_init__(self) -> None:
        self.sums = np.zeros((self.n_ops, len(self.names)))

    def add(self, op_index: int, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.sums[op_index, self.names.index(k)] += v

    def means(self) -> dict[str, np.ndarray]:
        """Per-token means; ``dnll`` is over next-token targets, the others over real tokens."""
        out = {}
        for c, k in enumerate(self.names):
            den = self.n_targets if k == "dnll" else self.n_tokens
            out[k] = self.sums[:, c] / den if den else np.full(self.n_ops, np.nan)
        return out

    def state(self) -> dict:
        return {"names": list(self.names), "sums": self.sums.tolist(), "n_tokens": self.n_tokens,
                "n_targets": self.n_targets, "nll_sum": self.nll_sum, "batches_done": self.batches_done}

    @classmethod
    def from_state(cls, state: dict) -> "CostSums":
        sums = np.asarray(state["sums"], dtype=float)
        out = cls(tuple(state["names"]), sums.shape[0])
        out.sums = sums
        out.n_tokens, out.n_targets = int(state["n_tokens"]), int(state["n_targets"])
        out.nll_sum, out.batches_done = float(state["nll_sum"]), int(state["batches_done"])
        return out
