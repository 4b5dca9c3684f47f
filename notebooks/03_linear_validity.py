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
# # 3. Is the linear approximation good enough? (Figure 4)
#
# The indicators of chapter 2 are computed from linear maps $A_i$, not from the layers
# themselves. Section 4.4 checks the approximation by swapping the *linearised* layers
# $L'_i(X) = X + X A_i$ (eq. 15):
#
# $$\delta'(i,i+1) = \mathbb{E}_t \frac{\|L'_{i+1}(L'_i(\hat X_i))_t - L'_i(L'_{i+1}(\hat X_i))_t\|}{\|\hat X_{i,t}\|}
#   = \mathbb{E}_t \frac{\|\hat X_{i,t}(A_iA_{i+1} - A_{i+1}A_i)\|}{\|\hat X_{i,t}\|}  \quad (16)$$
#
# (for linear layers the swap leaves only the commutator), and compares it with the real
# $\delta$ of eq. 2. This page also shows how much of each layer's update the linear fit
# explains ($R^2$), on the tokens it was fitted on and on the held-out $\delta$ tokens.
# It reuses chapter 2's cached run when the parameters match.

# %% tags=["parameters"]
model = "smollm2-135m"
text = "wiki"
metric_tokens = 16384
delta_tokens = 4096
seq_len = 128
batch_size = 8
window = 4
device = "cpu"
dtype = "float32"
seed = 0
cache_dir = "default"

# %%
from paperlib.params import check_parameters
check_parameters(globals())  # papermill values: lists parsed from strings, types checked, unknown names stop here
import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from paperlib.swap.config import SwapConfig
from paperlib.swap.pipeline import run_swap_analysis
from paperlib.swap.report import PAPER_RESULTS, figure4, figure_fit_quality
from paperlib.swap.stats import spearman

config = SwapConfig.from_mapping(globals())  # the parameters above
result = run_swap_analysis(config, cache_dir=cache_dir, progress=False)
display(Markdown(
    f"**Model:** {result.model_description}  \n**Text:** {result.text_description}  \n"
    f"**Tokens:** {result.fit.n_tokens} for the fits, {result.swaps.n_tokens} for $\\delta$ and $\\delta'$."
))

# %% [markdown]
# ```{admonition} Embedded configuration, not the paper's
# :class: warning
# With the default parameters this is SmolLM2-135M-Instruct (de-quantised 4-bit GGUF) on the
# Wikipedia articles shipped with gensim, not GPT-2 Large on webtext; see chapter 2.
# ```

# %% [markdown]
# ## Figure 4: $\delta'$ against $\delta$

# %%
corr = spearman(result.pairs["delta_lin"], result.pairs["delta"])
figure4(result.pairs, f"{model} on {text}")
plt.show()
display(Markdown(
    f"| | Spearman $\\rho(\\delta', \\delta)$ |\n|---|---|\n"
    f"| this run | **{corr.rho:.2f}** (95% CI {corr.ci_low:.2f} to {corr.ci_high:.2f}) |\n"
    f"| paper (GPT-2 Large, webtext) | {PAPER_RESULTS['spearman_delta_lin_delta']:.2f} |"
))

# %% [markdown]
# ## Fit quality per layer
# $R^2 = 1 - \sum_t \|Y_t - \hat X_t A_i\|^2 / \sum_t \|Y_t - \bar Y\|^2$ with $Y = X_{i+1} - X_i$.
# A fit that explains the update on its own tokens but not on held-out ones has too few tokens
# for its $d^2$ parameters; raise `metric_tokens`.

# %%
figure_fit_quality(result.layers, f"R$^2$ of the linear fit per layer: {model}")
plt.show()
result.layers
