# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. Beyond adjacent swaps: rewiring and what it costs the model's output
#
# Paper A ends with its future work: rewirings more complex than swapping neighbours. The papers
# it cites do exactly that, each with its own yardstick: ShortGPT deletes the layers with the
# smallest *Block Influence*, Gromov et al. delete the span with the smallest *angular distance*,
# and Sun et al. ("Transformer layers as painters") swap, repeat and run layers in parallel and
# read the cost at the output. This chapter measures all these operations and all these
# predictors with one code path (`paperlib.rewire`), and asks a question paper A leaves open:
# does its $\delta$, a change of hidden states, say anything about what a rewiring costs the
# model's **predictions**?
#
# **Operations**, on the real blocks (layers numbered from 1): `swap(i, j)` for any $i<j$;
# `delete(i)` and the span `delete(i..j)`; `parallel(i, i+1)`, where both layers read the same
# $X$ and their updates are added, $X + l_i(X) + l_{i+1}(X)$, and Sun et al.'s variant that
# averages their outputs, $\tfrac12(L_i(X) + L_{i+1}(X))$; `repeat(i)`, $L_i(L_i(X))$. Each is
# applied by calling the model's own blocks with the arguments the model passed them (as
# $\delta$ is in chapter 2): no copy of the model, and the states before the first changed
# layer are computed once per batch and reused by every operation.
#
# **Costs**, on held-out text (the *delta* half, never used for the fits):
#
# - $\delta = \mathbb{E}_t \|X'_{e,t} - X_{e,t}\| / \|X_{s,t}\|$, eq. 2 generalised: the change
#   at the end $e$ of the rewired span $s..e-1$;
# - $\mathrm{KL} = \mathbb{E}_t\,\mathrm{KL}(p_t \,\|\, q_t)$, the divergence of the rewired
#   model's next-token distribution $q_t$ from the original $p_t$ (nats per token);
# - $\Delta\mathrm{NLL} = \mathbb{E}_t[-\log q_t(y_{t+1})] - \mathbb{E}_t[-\log p_t(y_{t+1})]$,
#   the change of the mean negative log-likelihood ($e^{\Delta\mathrm{NLL}}$ is the perplexity ratio).
#
# **Predictors**, from the fits of pass 1 (chapter 2) and the states already held, without
# extra forward passes: paper A's $r$ (eq. 1, adjacent swaps); the **linear prediction** of any
# rewiring: with $L'_k(X) = X + XA_k$ (eq. 15) every reordering, deletion, repetition or
# parallelisation multiplies $\hat X_s$ by a product of $(I + A_k)$ in a new order, so
#
# $$\mathrm{linear} = \mathbb{E}_t \frac{\|\hat X_{s,t}(P_\text{new} - P_\text{orig})\|}{\|\hat X_{s,t}\|},
#   \qquad P_\text{orig} = \prod_{k=s}^{e-1}(I + A_k),$$
#
# which is $\delta'$ (eq. 16) for an adjacent swap; and, over the span $X_s \to X_e$, Block
# Influence $1 - \mathbb{E}_t\cos(X_s, X_e)$, the angular distance
# $\mathbb{E}_t \arccos(\cos(X_s, X_e))/\pi$ and the relative update
# $\mathbb{E}_t\|X_e - X_s\|/\|X_s\|$.

# %% tags=["parameters"]
model = "smollm2-135m"  # embedded causal LM; any hub name or folder (gpt2-large on a GPU machine)
text = "wiki"  # embedded; "webtext" for paper A's text
ops = ["swap", "delete", "delete_span", "parallel", "parallel_mean", "repeat"]
tokens = 256  # held-out tokens for the operations in `ops`
pair_tokens = 128  # held-out tokens for swap(i, j) over all pairs (the heat map); 0 skips it
max_span = 3  # delete_span: spans of 2 .. max_span layers
metric_tokens = 16384  # pass 1, as chapter 2 (its cached fits are reused)
delta_tokens = 4096
seq_len = 128
batch_size = 8
window = 4
device = "cpu"
dtype = "float32"
seed = 0
second_model = "minilm-l6"  # an encoder: hidden-state costs only; "" to skip
second_tokens = 2048
n_resamples = 2000  # bootstrap resamples of every Spearman interval
cache_dir = "default"  # finished passes are kept here and read back on reruns

# %% tags=["hide-input"]
from paperlib.params import check_parameters
check_parameters(globals())  # papermill values: lists parsed from strings, types checked, unknown names stop here
import time

t_start = time.perf_counter()

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

from paperlib.rewire import report
from paperlib.rewire.config import RewireConfig
from paperlib.rewire.pipeline import run_rewire_analysis
from paperlib.swap.stats import spearman

config = RewireConfig.from_mapping(globals())  # the parameters above
result = run_rewire_analysis(config, cache_dir=cache_dir, progress=False)
parts = [result.table]
if pair_tokens:
    pair_config = RewireConfig.from_mapping({**globals(), "ops": ("swap_all",), "tokens": pair_tokens})
    pairs_result = run_rewire_analysis(pair_config, cache_dir=cache_dir, progress=False)
    # swap(i, j) over all pairs, on its own (smaller) token budget; adjacent swaps stay in `result`
    all_pairs = pairs_result.table
else:
    pairs_result, all_pairs = None, result.table.iloc[:0]
cost = "kl" if result.has_head else "delta_out"
run_name = f"{model} on {text}"
display(Markdown(
    f"**Model:** {result.model_description}  \n**Text:** {result.text_description}  \n"
    f"**Held-out tokens:** {result.n_tokens} for {len(result.table)} operations"
    + (f", {pairs_result.n_tokens} for the {len(all_pairs)} swaps of all pairs" if pairs_result else "")
    + f"; the fits of pass 1 used {result.swap.fit.n_tokens} other tokens.  \n"
    + (f"**Original model:** mean next-token NLL {result.nll:.3f} nats (perplexity {np.exp(result.nll):.1f}) "
       f"on these tokens." if result.has_head else "**No LM head:** hidden-state costs only.")
))

# %% [markdown]
# ```{admonition} Embedded configuration, and how to scale it
# :class: warning
# With the default parameters this is SmolLM2-135M-Instruct (de-quantised 4-bit GGUF) on the
# Wikipedia articles shipped with gensim, as in chapter 2, and the costs are read on only
# **256 held-out tokens** (**128** for the 435 swaps of all pairs) so that the chapter runs in
# about 5 minutes on a 2-core CPU: every operation reruns the blocks after its first changed
# layer and the LM head, about 0.8 forward passes per operation, and there are 637 of them. The
# rankings below are therefore rankings on a small sample of text; the bootstrap intervals are
# over operations, not over text. The time grows linearly in `tokens` and `pair_tokens`. A
# paper-scale run (GPT-2 Large, 36 layers: 630 pair swaps and 212 other operations) on one GPU:
# `papermill notebooks/05_rewiring.ipynb out.ipynb -p model gpt2-large -p text webtext -p seq_len 1024 -p metric_tokens 200000 -p delta_tokens 50000 -p tokens 16384 -p pair_tokens 8192 -p device cuda`,
# or the table alone: `python -m paperlib rewire --model gpt2-large --text webtext --seq-len 1024 --metric-tokens 200000 --delta-tokens 50000 --tokens 16384 --ops swap_all delete delete_span parallel parallel_mean repeat --device cuda --out rewire.csv`.
# ```

# %% [markdown]
# ```{admonition} Choices this chapter makes
# :class: note
# - Block Influence, the angular distance and the relative update are read over the span an
#   operation changes ($X_s \to X_e$), from the original states of the held-out batches that the
#   costs are measured on (the rewiring pass holds them anyway: no extra forward pass); chapter 2
#   reads them for pairs on the fit tokens. For `delete` the relative update of the span is then
#   the hidden-state cost $\delta$ itself.
# - The angular distance is averaged over all tokens (Gromov et al. use the last token).
# - KL is $\mathrm{KL}(\text{original} \,\|\, \text{rewired})$ averaged over every real token;
#   $\Delta$NLL over the tokens whose next token is real; both on the same held-out tokens.
# - `parallel` adds the two residual updates; `parallel_mean` is Sun et al.'s average of the two
#   outputs. For post-LN encoders the "update" is $L_i(X) - X$, as in chapter 2.
# - $\delta$ at the span's end is divided by $\|X_s\|$, as eq. 2 divides by $\|X_i\|$.
# ```

# %% [markdown]
# ## Which predictor ranks each operation by its real output cost?
#
# **Claim.** Each family of operations has a literature predictor (Block Influence for deleting
# a layer, the angular distance for deleting a span, $r$ for an adjacent swap); the question is
# which predictor orders the operations of a family by their cost at the output. Below,
# Spearman's $\rho$ between every predictor and the KL cost within every family, with its 95%
# percentile bootstrap interval over the family's operations (red: high $\rho$; blue: low or
# negative). $r$ exists for adjacent swaps only.

# %% tags=["hide-input"]
if pairs_result is not None:  # the all-pairs family: its own run, adjacent swaps included
    rho_pairs = report.spearman_long(all_pairs, cost=cost, kinds=["swap_all"], n_resamples=n_resamples)
else:
    rho_pairs = report.spearman_long(result.table, cost=cost, kinds=[], n_resamples=n_resamples)
rho_ops = report.spearman_long(result.table, cost=cost, n_resamples=n_resamples,
                               kinds=[k for k in ops if not (k == "swap_all" and pairs_result is not None)])
rho = pd.concat([rho_ops, rho_pairs], ignore_index=True)
display(report.show_table(report.styled_grid(rho),
                          caption=f"Spearman ρ [95% CI] of predictor and {cost} per operation ({run_name})"))
best = report.best_predictors(rho)
display(report.show_table(pd.DataFrame(
    [{"operation": report.FAMILY_LABELS[k], "best predictor": report.LABELS[p],
      "ρ": rho.query("family == @k and predictor == @p")["rho"].iloc[0]} for k, p in best.items()]
).set_index("operation"), caption="The predictor with the largest ρ in each family", precision=2))

# %% tags=["remove-cell"]
def rho_of(family, predictor, frame=rho):
    row = frame.query("family == @family and predictor == @predictor")
    return (f"{row['rho'].iloc[0]:.2f} (95% CI {row['ci_low'].iloc[0]:.2f} to {row['ci_high'].iloc[0]:.2f})"
            if len(row) else "n/a")


for fam, pred in [("delete", "block_influence"), ("delete", "linear"), ("delete_span", "angular_distance"),
                  ("delete_span", "linear"), ("parallel", "linear"), ("repeat", "linear"),
                  ("swap_all", "linear"), ("swap_all", "block_influence")]:
    glue(f"rho_{fam}_{pred}", rho_of(fam, pred), display=False)
glue("best_delete", report.LABELS.get(best.get("delete", ""), "n/a"), display=False)
glue("best_swap_all", report.LABELS.get(best.get("swap_all", ""), "n/a"), display=False)

# %% [markdown]
# **What it means.** For deleting one layer, ShortGPT's Block Influence reaches
# $\rho$ = {glue:text}`rho_delete_block_influence` and the linear prediction
# {glue:text}`rho_delete_linear`; the best predictor of a deletion's KL here is
# {glue:text}`best_delete`. For spans of 2-3 layers the angular distance of Gromov et al. reaches
# {glue:text}`rho_delete_span_angular_distance` and the linear prediction
# {glue:text}`rho_delete_span_linear`. For parallelising two neighbours the linear prediction
# reaches {glue:text}`rho_parallel_linear`, for repeating a layer {glue:text}`rho_repeat_linear`,
# and over the swaps of all pairs {glue:text}`rho_swap_all_linear` (Block Influence of the span:
# {glue:text}`rho_swap_all_block_influence`; best: {glue:text}`best_swap_all`). A predictor whose
# interval includes 0 does not rank that family at all on this sample.

# %% [markdown]
# ## Do paper A's $\delta$ and $r$ predict what a swap costs the predictions?
#
# **Claim.** Paper A validates $r$ against $\delta$, a relative change of hidden states right
# after the swapped pair, and never against the output. Here are the three quantities of paper A
# for every adjacent swap against its KL and $\Delta$NLL cost, measured on the same held-out
# tokens ($\delta$ is recomputed here; $\delta'$ is the `linear` column).

# %% tags=["hide-input"]
adj = report.family(result.table, "swap")
rows = []
if result.has_head and len(adj) >= 3:
    for pred, label in [("r", "r (eq. 1)"), ("delta", "δ (eq. 2, measured)"), ("linear", "δ' (eq. 16)")]:
        for target in ("kl", "dnll"):
            c = spearman(adj[pred], adj[target], n_resamples=n_resamples)
            rows.append({"predictor": label, "cost": report.LABELS[target], "ρ": c.rho,
                         "95% CI": f"{c.ci_low:.2f} to {c.ci_high:.2f}", "p-value": f"{c.pvalue:.1e}", "n": c.n})
    adj_table = pd.DataFrame(rows).set_index(["predictor", "cost"])
    display(report.show_table(adj_table, caption=f"Adjacent swaps ({run_name})", precision=2))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), layout="constrained")
    for ax, pred, label in [(axes[0], "delta", "δ(i, i+1), eq. 2"), (axes[1], "r", "r(i, i+1), eq. 1")]:
        ax.scatter(adj[pred], adj["kl"], c=adj["i"], cmap="viridis", s=22)
        for _, row in pd.concat([adj.nlargest(3, "kl"), adj.nlargest(2, pred)]).drop_duplicates().iterrows():
            ax.annotate(f"({int(row['i'])}, {int(row['j'])})", (row[pred], row["kl"]), fontsize=8,
                        xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("KL(original || swapped), nats/token")
    sm = plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(adj["i"].min(), adj["i"].max()))
    fig.colorbar(sm, ax=axes, label="first layer i of the pair")
    fig.suptitle(f"Adjacent swaps: hidden-state effect against output cost ({run_name})")
    plt.show()
else:
    adj_table = pd.DataFrame()
    display(Markdown("No LM head (or fewer than 3 adjacent swaps): this section needs a causal LM."))

# %% tags=["remove-cell"]
def adj_rho(pred, target):
    if adj_table.empty:
        return "n/a"
    row = adj_table.loc[(dict(r="r (eq. 1)", delta="δ (eq. 2, measured)", linear="δ' (eq. 16)")[pred],
                         report.LABELS[target])]
    return f"{row['ρ']:.2f} (95% CI {row['95% CI']})"


for pred in ("r", "delta", "linear"):
    for target in ("kl", "dnll"):
        glue(f"adj_{pred}_{target}", adj_rho(pred, target), display=False)

# %% [markdown]
# **What it means.** Over the adjacent swaps, $\rho(\delta, \mathrm{KL})$ =
# {glue:text}`adj_delta_kl` and $\rho(\delta, \Delta\mathrm{NLL})$ = {glue:text}`adj_delta_dnll`;
# $\rho(r, \mathrm{KL})$ = {glue:text}`adj_r_kl` and $\rho(r, \Delta\mathrm{NLL})$ =
# {glue:text}`adj_r_dnll`; $\rho(\delta', \mathrm{KL})$ = {glue:text}`adj_linear_kl`. Where the
# interval stays above 0, a pair that changes the hidden states more also costs the predictions
# more, and paper A's hidden-state yardstick carries over to the output; where it includes 0, it
# does not on this sample. The colour shows where in the network each pair sits: the first and
# last pairs usually dominate both axes, and a rank correlation over ~30 pairs leans on them.

# %% [markdown]
# ## Swapping any two layers
#
# **Claim.** Sun et al. find the middle layers of a transformer share a representation space,
# so that reordering them is cheap while touching the first or last layers is not. The heat map
# shows the KL cost of `swap(i, j)` for every pair $i<j$ (log colour scale; row $i$, column $j$).

# %% tags=["hide-input"]
if len(all_pairs):
    fig, ax = plt.subplots(figsize=(8, 6.6))
    report.swap_heatmap(all_pairs, cost=cost, ax=ax,
                        title=f"cost of swap(i, j), {pairs_result.n_tokens} held-out tokens ({run_name})")
    plt.show()
    mat = report.pair_matrix(all_pairs, cost)
    cheap_pairs = all_pairs.nsmallest(5, cost)[["i", "j", "kl", "dnll", "delta", "linear"]]
    display(report.show_table(cheap_pairs.set_index(["i", "j"]), caption="The five cheapest swaps", precision=4))
    far = all_pairs[(all_pairs["j"] - all_pairs["i"]) >= 5]
    glue("cheapest_far_swap", f"swap({int(far.nsmallest(1, cost)['i'].iloc[0])}, "
         f"{int(far.nsmallest(1, cost)['j'].iloc[0])})" if len(far) else "n/a", display=False)
    glue("median_pair_kl", f"{all_pairs[cost].median():.3g}", display=False)
else:
    glue("cheapest_far_swap", "n/a", display=False)
    glue("median_pair_kl", "n/a", display=False)

# %% [markdown]
# **What it means.** Each cell is one rewired model. The median swap costs
# {glue:text}`median_pair_kl` nats per token; the cheapest swap of two layers at least 5 apart is
# {glue:text}`cheapest_far_swap`. A dark (costly) row or column marks a layer that cannot move
# anywhere; light cells mark pairs whose order matters little.

# %% [markdown]
# ## Which layers can be deleted or parallelised nearly for free?
#
# **Claim.** ShortGPT and Gromov et al. delete a large share of a model's layers with a small
# loss; Sun et al. run middle layers in parallel. Below, per layer, the KL cost of deleting it,
# of running it in parallel with the next one (updates added, or outputs averaged) and of
# repeating it; the three cheapest deletions are labelled.

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(9, 4.2))
report.layer_profile(result.table, cost=cost, ax=ax)
ax.set_title(f"cost of single-layer operations per layer ({run_name})")
plt.show()
frames = []
for kind in ("delete", "delete_span", "parallel", "parallel_mean", "repeat"):
    fam = report.family(result.table, kind)
    if len(fam):
        top = fam.nsmallest(3, cost)[["op", "i", "j", "kl", "dnll", "delta"]]
        top.insert(0, "family", report.FAMILY_LABELS[kind])
        frames.append(top)
cheapest = pd.concat(frames).set_index(["family", "op", "i", "j"])
if result.has_head:
    cheapest["perplexity ×"] = np.exp(cheapest["dnll"])
display(report.show_table(cheapest, caption="The three cheapest operations of each family", precision=4))

# %% tags=["remove-cell"]
dele = report.family(result.table, "delete").sort_values(cost)
par = report.family(result.table, "parallel").sort_values(cost)
glue("cheapest_delete", f"layer {int(dele['i'].iloc[0])}" if len(dele) else "n/a", display=False)
glue("cheapest_delete_kl", f"{dele[cost].iloc[0]:.3g}" if len(dele) else "n/a", display=False)
glue("cheapest_delete_ppl", f"{np.exp(dele['dnll'].iloc[0]):.3f}" if len(dele) and result.has_head else "n/a",
     display=False)
glue("costliest_delete", f"layer {int(dele['i'].iloc[-1])}" if len(dele) else "n/a", display=False)
glue("costliest_delete_kl", f"{dele[cost].iloc[-1]:.3g}" if len(dele) else "n/a", display=False)
glue("cheapest_parallel", f"layers {int(par['i'].iloc[0])} and {int(par['j'].iloc[0])}" if len(par) else "n/a",
     display=False)
glue("cheapest_parallel_kl", f"{par[cost].iloc[0]:.3g}" if len(par) else "n/a", display=False)
# pairs whose parallel run costs less than deleting either of its two layers
del_cost = dele.set_index("i")[cost]
cheaper = [int(i) for i, j, v in zip(par["i"], par["j"], par[cost])
           if i in del_cost.index and j in del_cost.index and v < min(del_cost[i], del_cost[j])]
glue("n_parallel_cheaper", f"{len(cheaper)} of {len(par)}", display=False)

# %% [markdown]
# **What it means.** The cheapest layer to delete is {glue:text}`cheapest_delete` (KL
# {glue:text}`cheapest_delete_kl` nats per token, perplexity multiplied by
# {glue:text}`cheapest_delete_ppl`); the most expensive is {glue:text}`costliest_delete` (KL
# {glue:text}`costliest_delete_kl`). The cheapest pair to run in parallel is
# {glue:text}`cheapest_parallel` (KL {glue:text}`cheapest_parallel_kl`), and for
# {glue:text}`n_parallel_cheaper` neighbouring pairs running the two layers in parallel costs less
# than deleting either one of them. "Nearly free" is
# relative: compare these numbers with the original model's NLL printed at the top of the page.
# For `delete`, the hidden-state cost $\delta$ at the span's end is by definition the span's
# relative update, so only the output costs tell anything new there.

# %% [markdown]
# ## Cost against predictor, per operation
#
# **Claim.** A rank correlation hides the shape of the relation. Each panel plots, for one
# family, the KL cost of every operation against that family's best predictor from the first
# table (log-log); the three costliest operations are labelled (`i` or `i,j`).

# %% tags=["hide-input"]
if best:
    both = pd.concat([result.table, all_pairs[all_pairs["j"] > all_pairs["i"] + 1]], ignore_index=True)
    report.cost_vs_predictor(both, cost=cost, predictor=best)
    plt.show()

# %% [markdown]
# **What it means.** Points on a rising line are ranked correctly by the predictor; a cloud, or
# labelled outliers far above it, are operations the predictor calls cheap but the model does not.

# %% [markdown]
# ## An encoder: hidden-state costs only
#
# all-MiniLM-L6-v2 (6 BERT layers) has no next-token head, so its operations are measured by
# $\delta$ and by the change of its last hidden state, $\mathbb{E}_t\|X'_{n,t} - X_{n,t}\| / \|X_{n,t}\|$
# (the `delta_out` column). With 6 layers each family has at most 15 operations, so the
# intervals are wide, and with 5 operations a bootstrap resample often repeats one operation, so
# no interval is given.

# %% tags=["hide-input"]
if second_model:
    second_config = RewireConfig.from_mapping({
        **globals(), "model": second_model, "tokens": second_tokens, "metric_tokens": metric_tokens // 2,
        "delta_tokens": delta_tokens // 2, "ops": (*ops, "swap_all")})
    second = run_rewire_analysis(second_config, cache_dir=cache_dir, progress=False)
    second_rho = report.spearman_long(second.table, cost="delta_out", n_resamples=n_resamples)
    display(report.show_table(report.styled_grid(second_rho),
                              caption=f"Spearman ρ [95% CI] of predictor and last-hidden-state change: "
                                      f"{second.model_description}, {second.n_tokens} held-out tokens"))
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    report.swap_heatmap(second.table, cost="delta_out", ax=ax, title=f"swap(i, j): {second_model}")
    plt.show()

# %% [markdown]
# ## Closing note: the measured table and what this page cost
#
# The Spearman table of this build (predictor × operation, $\rho$ with KL), and the wall time of
# this page's execution, measured inside it (the passes that were read from the cache rather
# than computed are listed; a cold build also fits pass 1 as chapter 2 does).

# %% tags=["hide-input"]
elapsed = time.perf_counter() - t_start
glue("build_seconds", f"{elapsed:.0f}", display=False)
grid = rho.pivot(index="predictor", columns="family", values="rho")
grid = grid.reindex(index=[p for p in report.PREDICTORS if p in grid.index],
                    columns=[k for k in report.KINDS if k in grid.columns])
display(report.show_table(grid.rename(index=report.LABELS, columns=report.FAMILY_LABELS),
                          caption=f"Spearman ρ with {cost} ({run_name})", precision=2))
computed = {**{f"main: {k}": v for k, v in result.seconds.items()},
            **({f"pairs: {k}": v for k, v in pairs_result.seconds.items()} if pairs_result else {})}
display(Markdown(
    f"This page ran in **{elapsed:.0f} s** on this machine (`device={device}`). Of that: "
    + (", ".join(f"{k} {v:.0f} s" for k, v in computed.items()) or "nothing timed") + " (a step not listed was "
    "read from the cache)."
))

# %% [markdown]
# This page ran in {glue:text}`build_seconds` s. To reproduce a number on this page, run
# `python -m paperlib rewire` with the parameters at the top; the table it writes is the one every
# figure here is drawn from.
