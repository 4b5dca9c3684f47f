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
# # 2. Measuring adjacent swaps (Figures 2 and 3)
#
# This chapter runs the paper's section 4.2-4.3 pipeline on a real pretrained model:
#
# 1. collect the residual stream $X_0, \dots, X_n$ on the *metric* text and fit one linear map
#    per layer, $A_i = \arg\min_A \mathbb{E}_t \|X_{i,t} + \hat X_{i,t} A - X_{i+1,t}\|^2$ (eq. 12),
#    where $\hat X_{i,t}$ averages the token's state and the 3 before it;
# 2. derive $\mathrm{Trans}(i) = \|A_i\|_F/\sqrt d$ (eq. 13),
#    $\mathrm{Dep}(i,j) = \|A_iA_j\|_2 / (\|A_i\|_2\|A_j\|_2)$ (eq. 14) and the score
#    $r(i,i+1) = \mathrm{Trans}(i)\,\mathrm{Trans}(i+1)\,(\mathrm{Dep}(i,i+1)+\mathrm{Dep}(i+1,i))$ (eq. 1);
# 3. on held-out *delta* text, swap every adjacent pair of real blocks and measure
#    $\delta(i,i+1) = \mathbb{E}_t \|L_{i+1}(L_i(X_i))_t - L_i(L_{i+1}(X_i))_t\| / \|X_{i,t}\|$ (eq. 2).
#
# All of it is `paperlib.swap`; this page only calls it. The **defaults are the embedded
# configuration** that runs offline on a laptop CPU (see the box below); the paper's run is
# `papermill notebooks/02_swap_measurements.ipynb out.ipynb -p model gpt2-large -p text webtext -p seq_len 1024 -p metric_tokens 200000 -p delta_tokens 50000 -p device cuda`.

# %% tags=["parameters"]
model = "smollm2-135m"  # embedded; the paper: "gpt2-large"
text = "wiki"  # embedded; the paper: "webtext" (or "webtext:/path/to/folder")
metric_tokens = 16384
delta_tokens = 4096
seq_len = 128
batch_size = 8
window = 4
device = "cpu"
dtype = "float32"
precision = "float64"  # the fits' products: float64 (exact) | tf32 | bf16x3 | bf16x6 (faster on GPUs; README)
activations = "auto"  # GPT-2's composed GELU as one fused kernel: auto (on GPUs) | fused | model
seed = 0
second_model = "minilm-l6"  # a second real model (BERT encoder); "" to skip
cache_dir = "default"  # finished passes are kept here and read back on reruns

# %% tags=["hide-input"]
from paperlib.params import check_parameters
check_parameters(globals())  # papermill values: lists parsed from strings, types checked, unknown names stop here
import dataclasses

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

from paperlib.swap.config import SwapConfig
from paperlib.swap.pipeline import run_swap_analysis
from paperlib.swap.report import (PAPER_RESULTS, PREDICTOR_LABELS, correlation_vs_paper, dominant_components,
                                  figure2, figure3, predictor_table, show_table)
from paperlib.swap.stats import spearman

config = SwapConfig.from_mapping(globals())  # the parameters above
result = run_swap_analysis(config, cache_dir=cache_dir, progress=False)
run_name = f"{model} on {text}"
display(Markdown(
    f"**Model:** {result.model_description}  \n**Text:** {result.text_description}  \n"
    f"**Tokens:** {result.fit.n_tokens} for the fits, {result.swaps.n_tokens} for $\\delta$; "
    f"sequences of at most {seq_len} tokens; dtype {dtype}."
))

# %% [markdown]
# ```{admonition} Embedded configuration, not the paper's
# :class: warning
# Unless the parameters were changed, the numbers below come from **SmolLM2-135M-Instruct**
# (a Llama-style decoder, 30 layers, $d = 576$, its 4-bit GGUF weights de-quantised to fp32) on
# **~100 English Wikipedia articles shipped with gensim**, not from GPT-2 Large (36 layers,
# $d = 1280$) on OpenAI webtext. GPT-2 weights and webtext cannot be downloaded on the machines
# this book is built on. The code path is the same; only the model and text differ.
# ```

# %% [markdown]
# ## Figure 2: the score $r$ predicts the swap effect $\delta$
#
# **Claim (section 4.2).** Pairs with a larger score $r(i,i+1)$ are harder to swap: across the
# adjacent pairs of GPT-2 Large the paper finds Spearman $\rho(r, \delta) = 0.91$. Below, one
# point per adjacent pair of this run's model; the colour is the pair's first layer $i$, and the
# pairs with the largest $r$, the largest $\delta$ and the one whose two ranks disagree most are
# labelled.

# %% tags=["hide-input"]
table = predictor_table(result.pairs)
corr_r = spearman(result.pairs["r"], result.pairs["delta"])
corr_lin = spearman(result.pairs["delta_lin"], result.pairs["delta"])
fig, ax = plt.subplots(figsize=(6.4, 4.8))
figure2(result.pairs, f"Figure 2: {run_name}", ax=ax)
fig.tight_layout()
plt.show()
display(show_table(correlation_vs_paper(corr_r, PAPER_RESULTS["spearman_r_delta"], run_name,
                                        what="Spearman ρ(r, δ)"), precision=2))

# %% tags=["remove-cell"]
# values for the landing page and the text (myst-nb glue)
outlier = (result.pairs["r"].rank() - result.pairs["delta"].rank()).abs().idxmax()
glue("rho_r_delta", f"{corr_r.rho:.2f}", display=False)
glue("rho_r_delta_ci", f"{corr_r.ci_low:.2f} to {corr_r.ci_high:.2f}", display=False)
glue("rho_lin_delta", f"{corr_lin.rho:.2f}", display=False)
glue("rho_lin_delta_ci", f"{corr_lin.ci_low:.2f} to {corr_lin.ci_high:.2f}", display=False)
glue("n_pairs", f"{len(result.pairs)}", display=False)
glue("outlier_pair", f"({int(result.pairs.loc[outlier, 'i'])}, {int(result.pairs.loc[outlier, 'j'])})",
     display=False)
glue("swap_run", f"{result.model_description}; {result.text_description}; {result.fit.n_tokens} fit tokens, "
     f"{result.swaps.n_tokens} delta tokens", display=False)
glance = correlation_vs_paper(corr_r, PAPER_RESULTS["spearman_r_delta"], run_name, what="Spearman ρ")
glance_lin = correlation_vs_paper(corr_lin, PAPER_RESULTS["spearman_delta_lin_delta"], run_name, what="Spearman ρ")
glance.index = ["ρ(r, δ): " + i for i in glance.index]
glance_lin.index = ["ρ(δ', δ): " + i for i in glance_lin.index]
glue("glance_paper_a", show_table(pd.concat([glance, glance_lin]), precision=2), display=False)

# %% [markdown]
# **What it means.** In this run $\rho(r, \delta)$ = {glue:text}`rho_r_delta` (95% bootstrap
# interval {glue:text}`rho_r_delta_ci` over the {glue:text}`n_pairs` pairs), against the paper's
# 0.91 on GPT-2 Large: a positive $\rho$ means that $r$, computed from linear fits alone, orders
# the pairs by how much a swap changes the hidden states; the interval says whether the paper's
# value is within this run's uncertainty. The pair whose ranks under $r$ and $\delta$ disagree
# most is {glue:text}`outlier_pair`, labelled in the figure.
#
# **Why the two values can differ.** (i) A different model: SmolLM2 has 29 pairs, GPT-2 Large 35,
# and a Spearman over ~30 points is uncertain (see the interval above); (ii) SmolLM2 is a
# pre-LN Llama with RMSNorm and rotary positions, GPT-2 a pre-LN model with learned positions, so
# their first and last layers (which dominate both $r$ and $\delta$) behave differently;
# (iii) its weights are a 4-bit quantisation of the released model; (iv) Wikipedia prose is not
# webtext, and the paper does not say how many tokens it used; (v) the first token of every
# sequence carries very large activations (an attention sink), which the least-squares fit and
# the relative norms both feel. The deviations page lists every choice that differs from the paper.

# %% [markdown]
# ## Figure 3: which component makes a pair hard to swap
# **Claim (section 4.3).** Pair (1, 2) is hard to swap because of $\mathrm{Trans}(1)$, pair
# (35, 36) because of $\mathrm{Trans}(36)$, pair (17, 18) because of $\mathrm{Dep}(17, 18)$.
# Below, the four components of $r$ per pair, and for the six pairs with the largest $r$ the
# component that stands out most against its own median.

# %% tags=["hide-input"]
figure3(result.pairs, f"Figure 3: components of r per pair, {run_name}")
plt.show()
top = dominant_components(result.pairs).sort_values("r", ascending=False).head(6)
display(show_table(top.set_index(["i", "j"]), caption="Pairs with the largest r and their dominant component"))

# %% [markdown]
# **What it means.** The table names, for this model, which factor of eq. 1 makes each of the
# hardest pairs hard; `log_ratio` is how far (in log units) that component sits above its median.

# %% [markdown]
# ## Which predictor of $\delta$ is best?
# **Claim.** Beside $r$ and its linearised twin $\delta'$, three predictors from the
# layer-pruning literature can rank pairs, all measured on the metric tokens over the two-layer
# block $X_i \to X_{i+2}$: Block Influence $1 - \cos$ (ShortGPT), the angular distance
# $\arccos(\cos)/\pi$ (Gromov et al.) and the relative update $\|X_{i+2} - X_i\|/\|X_i\|$.
# Gromov et al. measure the angle at the **last token** of each sequence; this book's
# `angular_distance` averages it over **all tokens**. Both are shown.

# %% tags=["hide-input"]
named = table.rename(index=PREDICTOR_LABELS)
display(show_table(named.style.format({"spearman": "{:.2f}", "p_value": "{:.1e}", "ci_low": "{:.2f}",
                                       "ci_high": "{:.2f}", "n_pairs": "{:d}"}),
                   caption=f"Spearman ρ of each predictor with δ ({run_name})"))

# %% tags=["remove-cell"]
glue("rho_angle_all", f"{table.loc['angular_distance', 'spearman']:.2f}", display=False)
glue("rho_angle_last", f"{table.loc['angular_distance_last', 'spearman']:.2f}", display=False)

# %% [markdown]
# **What it means.** Averaged over all tokens the angular distance reaches
# $\rho$ = {glue:text}`rho_angle_all`; at the last token, as Gromov et al. define it,
# {glue:text}`rho_angle_last`. Where the two differ, which token the angle is taken at is a real
# choice, not a detail of implementation (it is listed on the deviations page).

# %% [markdown]
# ## The swap table
# One row per adjacent pair (layers numbered from 1 as in the paper); every figure above is drawn
# from it.

# %% tags=["hide-input"]
columns = ["i", "j", "trans_i", "trans_j", "dep_ij", "dep_ji", "r", "delta", "delta_lin"]
display(show_table(result.pairs[columns].set_index(["i", "j"]), precision=4))

# %% [markdown]
# ## A second real model: an encoder
# The same analysis on all-MiniLM-L6-v2 (a 6-layer BERT). Only 5 pairs, so no correlation is
# meaningful; the table shows that the pipeline handles post-LN encoders. For bidirectional
# encoders the paper's causal window $\hat X$ (the token and the 3 before it) is kept unchanged,
# although attention also reads later tokens; `window` is a parameter.

# %% tags=["hide-input"]
if second_model:
    second_config = dataclasses.replace(config, model=second_model, metric_tokens=metric_tokens // 2,
                                        delta_tokens=delta_tokens // 2)
    second = run_swap_analysis(second_config, cache_dir=cache_dir, progress=False)
    display(show_table(second.pairs[columns].set_index(["i", "j"]), caption=second.model_description, precision=4))
