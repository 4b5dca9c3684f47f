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
seed = 0
second_model = "minilm-l6"  # a second real model (BERT encoder); "" to skip
cache_dir = "default"  # finished passes are kept here and read back on reruns

# %%
from paperlib.params import check_parameters
check_parameters(globals())  # papermill values: lists parsed from strings, types checked, unknown names stop here
import dataclasses

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from paperlib.swap.config import SwapConfig
from paperlib.swap.pipeline import run_swap_analysis
from paperlib.swap.report import PAPER_RESULTS, dominant_components, figure2, figure3, predictor_table

config = SwapConfig.from_mapping(globals())  # the parameters above
result = run_swap_analysis(config, cache_dir=cache_dir, progress=False)
embedded = model != "gpt2-large" or not text.startswith("webtext")
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
# ## The swap table
# One row per adjacent pair (layers numbered from 1 as in the paper).

# %%
pd.set_option("display.precision", 4)
result.pairs[["i", "j", "trans_i", "trans_j", "dep_ij", "dep_ji", "r", "delta", "delta_lin"]]

# %% [markdown]
# ## Figure 2: the score $r$ predicts the swap effect $\delta$

# %%
table = predictor_table(result.pairs)
rho = table.loc["r", "spearman"]
figure2(result.pairs, f"{model} on {text}")
plt.show()

# %%
display(Markdown(
    f"| | Spearman $\\rho(r, \\delta)$ |\n|---|---|\n"
    f"| this run ({model}, {text}) | **{rho:.2f}** (95% CI {table.loc['r', 'ci_low']:.2f} to "
    f"{table.loc['r', 'ci_high']:.2f}, p = {table.loc['r', 'p_value']:.1e}) |\n"
    f"| paper (GPT-2 Large, webtext) | {PAPER_RESULTS['spearman_r_delta']:.2f} |"
))

# %% [markdown]
# **Why the two values can differ.** (i) A different model: SmolLM2 has 29 pairs, GPT-2 Large 35,
# and a Spearman over ~30 points is uncertain (this run's bootstrap interval is in the table
# above); (ii) SmolLM2 is a
# pre-LN Llama with RMSNorm and rotary positions, GPT-2 a pre-LN model with learned positions, so
# their first and last layers (which dominate both $r$ and $\delta$) behave differently;
# (iii) its weights are a 4-bit quantisation of the released model; (iv) Wikipedia prose is not
# webtext, and the paper does not say how many tokens it used; (v) the first token of every
# sequence carries very large activations (an attention sink), which the least-squares fit and
# the relative norms both feel.

# %% [markdown]
# ## Figure 3: which component makes a pair hard to swap
# Section 4.3 reads Figure 3 as: pair (1, 2) is hard because of $\mathrm{Trans}(1)$, pair
# (35, 36) because of $\mathrm{Trans}(36)$, pair (17, 18) because of $\mathrm{Dep}(17, 18)$.
# Below, each component is compared with its own median, and the pairs with the largest $r$ are
# listed with the component that stands out most.

# %%
figure3(result.pairs, f"components of r per pair: {model} on {text}")
plt.show()
dominant_components(result.pairs).sort_values("r", ascending=False).head(6)

# %% [markdown]
# ## Which predictor of $\delta$ is best?
# Beside $r$ and its linearised twin $\delta'$, three predictors from the layer-pruning literature,
# all measured on the same metric tokens over the two-layer block $X_i \to X_{i+2}$:
# Block Influence $1 - \cos$ (ShortGPT), the angular distance $\arccos(\cos)/\pi$ (Gromov et al.),
# and the relative update $\|X_{i+2} - X_i\|/\|X_i\|$.

# %%
table

# %% [markdown]
# ## A second real model: an encoder
# The same analysis on all-MiniLM-L6-v2 (a 6-layer BERT). Only 5 pairs, so no correlation is
# meaningful; the table shows that the pipeline handles post-LN encoders. For bidirectional
# encoders the paper's causal window $\hat X$ (the token and the 3 before it) is kept unchanged,
# although attention also reads later tokens; `window` is a parameter.

# %%
if second_model:
    second_config = dataclasses.replace(config, model=second_model, metric_tokens=metric_tokens // 2,
                                        delta_tokens=delta_tokens // 2)
    second = run_swap_analysis(second_config, cache_dir=cache_dir, progress=False)
    display(Markdown(f"**Model:** {second.model_description}"))
    display(second.pairs[["i", "j", "trans_i", "trans_j", "dep_ij", "dep_ji", "r", "delta", "delta_lin"]])
