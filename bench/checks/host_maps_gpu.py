"""GPU check: the host copies of the fitted maps (HostMaps, written by FitSaver while pass 2 runs)
equal the maps on the device, for a random GPT-2 Large-width model (column-major solver output)."""
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, GPT2Config

from paperlib.data.tokens import TokenBatch
from paperlib.swap.analysis import fit_layers, measure_swaps
from paperlib.swap.blocks import ResidualStack
from paperlib.swap.pipeline import FitSaver, _load_fit

torch.manual_seed(0)
with torch.device("cuda"):
    model = AutoModel.from_config(GPT2Config(n_layer=6, n_embd=1280, n_head=20), dtype=torch.bfloat16).eval()
ids = torch.randint(0, 50257, (4, 1024))
batches = [TokenBatch(ids, torch.ones_like(ids))]
stack = ResidualStack(model)
for precision in ("float64", "tf32"):
    fit = fit_layers(stack, batches, progress=False, precision=precision)
    with tempfile.TemporaryDirectory() as tmp:
        saver = FitSaver(Path(tmp) / "fit.npz", fit)
        measure_swaps(stack, batches, fit, progress=False, precision=precision)
        saver.wait()
        saved = np.stack(_load_fit(Path(tmp) / "fit.npz").A)
    device = torch.stack(fit.A_device).cpu().numpy()
    print(precision, "host copy == device maps:", np.array_equal(np.stack(list(fit.A)), device),
          "saved == device maps:", np.array_equal(saved, device),
          "strides of a solved map:", fit.A_device[0].stride())
