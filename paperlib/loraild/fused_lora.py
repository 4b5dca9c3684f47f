"""The student's q/k/v LoRA of one layer as one product, and its LoRA-A features recorded for free.

peft computes each adapter on its own: ``y_m = W_m x + s B_m A_m dropout_m(x)`` for m in query,
key, value, five kernels each (dropout, two products, scale, add) plus their backward, and the
feature recorder (:class:`~paperlib.loraild.features.LoraFeatureRecorder`) keeps each ``A_m`` output
and stacks them afterwards.  At the paper's sizes in bf16 the LoRAILD step is bound by these
kernel launches (``bench/README.md``).  Here, per layer, with ``N = B T`` tokens:

- ``H = [A_q dropout_q(x); A_k dropout_k(x); A_v dropout_v(x)]`` ``[3, N, r]`` is one batched
  product of three independently dropped-out copies of ``x`` (training; three dropouts of ``x``, in
  the autocast dtype under autocast) or one ``[N, d] x [d, 3r]`` product (no dropout);
- ``y_m = addmm(W_m x, (s H)_m, B_m^T)``: the LoRA update in one kernel; ``H`` is scaled once per
  layer (exactly ``s (B H)`` when ``s`` is a power of two, as ``alpha = 2r`` gives), so the
  products' backward needs no scaling kernels;
- the ``A`` and ``B`` weights of a layer are read as one stack and one concatenation, each cast
  once under autocast (instead of one cast per product and per backward);
- ``H`` *is* the layer's feature record ``h_x`` of eq. 3 (``[B, T, 3, r]``), nothing extra;
  :meth:`FusedLoraRecorder.stacked` is one stack of the layers' records seen as a permuted view.

By default (``product=True``) a layer goes one step further: its query call
computes the base projections and the LoRA of all three modules as one matrix product of the input
widened by the features, times the weights widened by the scaled ``B`` blocks
(:class:`~paperlib.loraild.qkv_product.QkvProduct`, one autograd node; the same masks as the torch path
below), which removes the three ``addmm`` and their backward, and autocast's three casts of the input
and twelve of the gradients (``bench/README.md`` section 7, rounds 12 and 13).  Compiled students trace
the product too (``compiled_product``: a CUDA-graph step took 20.9 against 22.1 ms with the composite
path).  The composite path described above stays for ``product=False``.

The arithmetic is LoRA's (``s = alpha / r``), the parameters and state-dict names are peft's,
dropout masks stay independent per module and are the ones peft draws: a layer draws its three one
after another on the layer input, as peft's query, key and value modules do, so fused and unfused
runs agree to rounding with and without dropout (``tests/loraild/test_loraild_fused_lora.py``, float32
on the CPU and GPUs).  Under bf16 autocast on GPUs the fused layer drops out the bf16 cast (half the
bytes) where peft drops out the float32 input, torch's kernel draws other masks for the two dtypes,
and runs with dropout differ as two seeds' dropout would; so do runs with the Triton op.  It patches the three modules'
``forward`` (an instance attribute, removed by :meth:`FusedLoraRecorder.remove`).

With dropout, ``H`` can come from one Triton op instead (``kernel="triton"``:
:func:`~paperlib.loraild.lora_a_kernel.dropout_lora_a`, the masks drawn in registers and regenerated
in backward, no ``[3, N, d]`` copies), and the layer's whole LoRA branch then runs as one autograd node
(:class:`~paperlib.loraild.lora_branch.LoraBranch`, ``one_node=True``).  ``kernel="auto"`` (the default)
is the torch path: alone, the Triton op is 1.7x faster at 16,384 bf16 tokens on an H100, but in the
whole bf16 step at 128 x 128 the torch path was faster by 2.1 and 6.1 ms at the medians of two calls
on H100s, and in 14 of 16 paired repeats (``bench/README.md`` section 7, round 9).  The torch path
also runs on the CPU, in float32 and under ``torch.compile`` (the op's mask seed is a host value).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from paperlib.loraild import lora_a_kernel, qkv_native
from paperlib.loraild.config import LORA_KERNELS
from paperlib.loraild.lora_branch import LoraBranch
from paperlib.loraild.models import LORA_TARGETS, encoder_layers
from paperlib.loraild.qkv_product import ProductSpec, QkvProduct, three_dropouts


class _LayerQkv(NamedTuple):
    """A layer's query/key/value as the product reads them: base layers, LoRA-A and LoRA-B modules (q, k,
    v), the dropout module and its ``p``, and whether every base layer is a plain ``nn.Linear``."""

    base: tuple[nn.Module, ...]
    lora_a: tuple[nn.Module, ...]
    lora_b: tuple[nn.Module, ...]
    dropout: nn.Module
    p: float
    plain_base: bool

KERNELS = LORA_KERNELS  # the run setting's values (RunConfig.lora_kernel) are the recorder's
NATIVE = ("auto", "on", "off")  # FusedLoraRecorder(native=...): who runs the eager product (qkv_native)


def dropout_lora_a_torch(x2: torch.Tensor, a: torch.Tensor, p: float) -> torch.Tensor:
    """``[3, N, r]``: ``H[c] = dropout_c(x2) A[c]^T`` in torch, three independently dropped-out copies
    of ``x2`` ``[N, d]`` (the masks :func:`~paperlib.loraild.qkv_product.three_dropouts` draws, as the
    product does) and one batched product with ``a`` ``[3, r, d]`` (the op
    :mod:`~paperlib.loraild.lora_a_kernel` computes without the copies)."""
    xs = torch.stack(three_dropouts(x2.contiguous(), p)[0])  # three independent masks
    # (A xs^T)^T rather than xs A^T: A's gradient then comes out contiguous, as the
    # parameters are, so no per-module copy is needed to accumulate it
    return torch.bmm(a, xs.transpose(1, 2)).transpose(1, 2)


def _qkv_modules(layer: nn.Module, adapter: str) -> list[nn.Module]:
    found = {}
    for name, module in layer.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in LORA_TARGETS and hasattr(module, "lora_A") and adapter in module.lora_A:
            found[leaf] = module
    if set(found) != set(LORA_TARGETS):
        raise ValueError(f"layer has LoRA on {sorted(found)}, expected {LORA_TARGETS}")
    return [found[m] for m in LORA_TARGETS]


def _dropout_p(module: nn.Module, adapter: str) -> float:
    drop = module.lora_dropout[adapter]
    return float(drop.p) if isinstance(drop, nn.Dropout) else 0.0


class FusedLoraRecorder:
    """Fused q/k/v LoRA for every layer of a peft student, recording ``[B, T, 3, r]`` per layer.

    The same interface as :class:`~paperlib.loraild.features.LoraFeatureRecorder` (``n_layers``,
    :meth:`get`, :meth:`stacked`, :meth:`clear`, :meth:`remove`).

    ``kernel`` picks how training with dropout computes the features: ``"triton"``
    (:func:`~paperlib.loraild.lora_a_kernel.dropout_lora_a`), ``"torch"`` (three dropouts of the input,
    one batched product) or ``"auto"`` (torch: measured faster in the whole step, module docstring).

    ``product`` (default): the layer's query call computes all three outputs,
    base projections and LoRA together, as one matrix product and one autograd node
    (:class:`~paperlib.loraild.qkv_product.QkvProduct`; key and value return theirs), with the features
    from ``kernel``'s path; the same masks as the composite path for the torch features.
    ``compiled_product`` (default): under ``torch.compile`` too, dynamo tracing the product into the
    student's graph (torch features only); ``False`` keeps the composite path there (round 11's).
    ``native`` picks who runs the eager product with torch features: ``"auto"`` (default) the C++ twin
    (:mod:`~paperlib.loraild.qkv_native`, the same values from the same random state, less host time) on
    CUDA inputs where it can be built, else Python; ``"on"`` the C++ one on every device (an error where
    it cannot be built); ``"off"`` Python.

    ``one_node`` (with ``product=False``): where the Triton op runs, the layer's query call computes all
    three outputs as one autograd node (:class:`~paperlib.loraild.lora_branch.LoraBranch`), instead of
    the composite of about 20 tensor operations per layer.
    """

    def __init__(self, model: nn.Module, adapter: str = "default", kernel: str = "auto", one_node: bool = True,
                 product: bool = True, compiled_product: bool = True, native: str = "auto"):
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, not {kernel!r}")
        if native not in NATIVE:
            raise ValueError(f"native must be one of {NATIVE}, not {native!r}")
        if native == "on":
            try:
                qkv_native.load()
            except RuntimeError as e:
                raise ValueError(f"native='on': {e}") from None
        self.native = native
        if kernel == "triton" and not lora_a_kernel.triton_installed():
            raise ValueError("kernel='triton' needs triton, which is not installed")
        self.kernel = kernel
        self.one_node = one_node
        self.product = product
        self.compiled_product = compiled_product
        self.adapter = adapter
        self.layers = [_qkv_modules(layer, adapter) for layer in encoder_layers(model)]
        self.n_layers = len(self.layers)
        for mods in self.layers:
            for m in mods:
                if getattr(m, "lora_variant", None) and adapter in m.lora_variant:
                    raise ValueError("fused LoRA supports plain LoRA only (no DoRA or other variants)")
            if len({_dropout_p(m, adapter) for m in mods}) != 1:
                raise ValueError("fused LoRA needs the same dropout on query, key and value")
        self._inputs: list[torch.Tensor | None] = [None] * self.n_layers
        self._feats: list[torch.Tensor | None] = [None] * self.n_layers  # [3, N, r]
        self._shapes: list[tuple[int, ...] | None] = [None] * self.n_layers
        # per layer, the three [N, r] inputs of the B products: s H_m (one unbind, one scaling)
        self._scaled: list[tuple[torch.Tensor, ...] | None] = [None] * self.n_layers
        self._b: list[tuple[torch.Tensor, ...] | None] = [None] * self.n_layers  # B_q, B_k, B_v (cast once)
        # per layer, the three outputs of the one-node branch for the input in _inputs (or None)
        self._outs: list[tuple[torch.Tensor, ...] | None] = [None] * self.n_layers
        scales = [{m.scaling[adapter] for m in mods} for mods in self.layers]
        self._branch_scale = [sc.pop() if len(sc) == 1 else None for sc in scales]
        # what the product reads at every call, looked up once (peft's ModuleDicts cost host time per step)
        self._qkv = [_LayerQkv(tuple(m.base_layer for m in mods), tuple(m.lora_A[adapter] for m in mods),
                               tuple(m.lora_B[adapter] for m in mods), mods[0].lora_dropout[adapter],
                               _dropout_p(mods[0], adapter), all(type(m.base_layer) is nn.Linear for m in mods))
                     for mods in self.layers]
        self._specs: dict[tuple, ProductSpec] = {}  # (layer, dropping, dtype) -> the torch features' settings
        for li, mods in enumerate(self.layers):
            for mi, m in enumerate(mods):
                m.forward = self._forward(li, mi, m)

    def _weights(self, li: int, device_type: str) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """``A`` ``[3, r, d]`` (one stack) and ``B_q, B_k, B_v`` (one concatenation, split) of layer ``li``.

        Under autocast each is cast once to the autocast dtype (the value autocast gives each
        product's weight anyway): two casts and two cast-backwards per layer instead of four each.
        """
        mods = self.layers[li]
        a = torch.stack([m.lora_A[self.adapter].weight for m in mods])
        b_w = [m.lora_B[self.adapter].weight for m in mods]
        b = torch.cat(b_w)  # [3 d_out, r]
        dtype = self._compute_dtype(li, device_type)
        if a.dtype != dtype:
            a, b = a.to(dtype), b.to(dtype)
        # one split (its backward is one operation; a slice per piece would give three plus their sums)
        return a, b.split([w.shape[0] for w in b_w])

    def _features(self, li: int, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``[3, N, r]`` LoRA-A outputs of query, key, value for the layer input ``x`` (``a``: ``[3, r, d]``)."""
        x2 = x.reshape(-1, x.shape[-1])
        p = self._qkv[li].p
        if self._dropping(li):
            if x2.dtype != a.dtype and torch.is_autocast_enabled(x2.device.type):
                # the cast the product makes anyway, done once on [N, d] before the three dropped-out
                # copies rather than on them: the three dropouts and their backward move half the bytes
                # (they were 38% of the step's extra device time over Vanilla KD at 128 x 128, bf16)
                x2 = x2.to(a.dtype)
            if self._triton():
                return lora_a_kernel.dropout_lora_a(x2, a, p)
            return dropout_lora_a_torch(x2, a, p)
        r = a.shape[1]
        return (x2 @ a.reshape(3 * r, -1).T).view(-1, 3, r).transpose(0, 1)

    def _dropping(self, li: int) -> bool:
        """Whether layer ``li``'s LoRA dropout acts now (``p > 0`` and the dropout module in training)."""
        q = self._qkv[li]
        return q.p > 0 and q.dropout.training

    def _triton(self) -> bool:
        """Whether the dropped-out features come from the Triton op: only for ``kernel="triton"``, which
        raises where it can't run ("auto" is the torch path, module docstring)."""
        if self.kernel != "triton":
            return False
        if torch.compiler.is_compiling():
            raise ValueError("kernel='triton' cannot run under torch.compile (its mask seed is a host value); "
                             "use 'auto'")
        return True  # dropout_lora_a says why when it cannot run on the input

    def _compute_dtype(self, li: int, device_type: str) -> torch.dtype:
        """The dtype of layer ``li``'s LoRA products: autocast's when it is on (the value autocast gives each
        product's weight anyway), else the A weights' own."""
        a_dtype = self._qkv[li].lora_a[0].weight.dtype
        if torch.is_autocast_enabled(device_type) and a_dtype.is_floating_point:
            return torch.get_autocast_dtype(device_type)
        return a_dtype

    def _branch_applies(self, li: int, x: torch.Tensor) -> torch.dtype | None:
        """The compute dtype when the layer runs as one node (dropout on, the Triton op chosen), else ``None``."""
        if not self.one_node or self._branch_scale[li] is None:
            return None
        if not self._dropping(li):
            return None
        if not self._triton():  # raises under torch.compile
            return None
        dtype = self._compute_dtype(li, x.device.type)
        if (dtype != x.dtype and not torch.is_autocast_enabled(x.device.type)) or not lora_a_kernel.available(x):
            return None  # the composite path raises the op's error (dtypes, device)
        return dtype

    def _product_spec(self, li: int, x: torch.Tensor) -> ProductSpec | None:
        """The settings of layer ``li``'s q/k/v product for ``x`` when the layer runs as one (``product``, and
        ``compiled_product`` while compiling; plain ``nn.Linear`` base layers, one LoRA scale), else ``None``.
        The torch features' settings are made once per (layer, dropout on, dtype) and reused."""
        if not self.product or self._branch_scale[li] is None:
            return None
        compiling = torch.compiler.is_compiling()
        if compiling and not self.compiled_product:
            return None
        q = self._qkv[li]
        if not q.plain_base:
            return None
        dtype = self._compute_dtype(li, x.device.type)
        if dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
            return None  # the composite path raises the products' own dtype error
        drop = self._dropping(li)
        if drop and self._triton():
            if not lora_a_kernel.available(x):
                return None  # the composite path raises the op's error (device)
            return ProductSpec(p=q.p, scale=float(self._branch_scale[li]), dtype=dtype, features="triton",
                               seed=lora_a_kernel.draw_seed())
        key = (li, drop, dtype)
        spec = None if compiling else self._specs.get(key)
        if spec is None:
            spec = ProductSpec(p=q.p if drop else 0.0, scale=float(self._branch_scale[li]), dtype=dtype)
            if not compiling:
                self._specs[key] = spec
        return spec

    def _run_product(self, li: int, x: torch.Tensor, spec: ProductSpec) -> tuple[torch.Tensor, ...]:
        """All three outputs of layer ``li`` for ``x`` as one product (C++ or Python, ``native``); records
        the features."""
        base, (aq, ak, av), (bq, bk, bv) = self._qkv[li][:3]
        if self._native(x) and qkv_native.applies(x, base, spec):
            *outs, h = qkv_native.qkv_lora(x, base, (aq.weight, ak.weight, av.weight),
                                           (bq.weight, bk.weight, bv.weight), spec)
        else:
            lq, lk, lv = base
            *outs, h = QkvProduct.apply(x, lq.weight, lq.bias, lk.weight, lk.bias, lv.weight, lv.bias,
                                        aq.weight, ak.weight, av.weight, bq.weight, bk.weight, bv.weight, spec)
        return self._record_node(li, x, outs, h)

    def _native(self, x: torch.Tensor) -> bool:
        """Whether the C++ product runs for ``x`` (``native``; ``"auto"``: CUDA inputs, once it is built)."""
        if self.native == "off":
            return False
        if self.native == "on":
            return True
        return x.is_cuda and qkv_native.available()

    def _record_node(self, li: int, x: torch.Tensor, outs: list[torch.Tensor],
                     h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Keep what one node computed for layer ``li``'s input ``x``: the three outputs (key and value
        return theirs) and the features ``h`` ``[3, N, r]``."""
        self._inputs[li] = x
        self._feats[li] = h
        self._shapes[li] = tuple(x.shape[:-1])
        self._scaled[li] = self._b[li] = None
        self._outs[li] = tuple(outs)
        return self._outs[li]

    def _run_branch(self, li: int, x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """All three outputs of layer ``li`` for ``x`` as one node; records the features."""
        mods = self.layers[li]
        ad = self.adapter
        y0 = [m.base_layer(x) for m in mods]
        a = [m.lora_A[ad].weight for m in mods]
        b = [m.lora_B[ad].weight for m in mods]
        *outs, h = LoraBranch.apply(x, *y0, *a, *b, self._qkv[li].p, lora_a_kernel.draw_seed(),
                                    float(self._branch_scale[li]), dtype, lora_a_kernel.DEFAULT_CONFIG)
        return self._record_node(li, x, outs, h)

    def _forward(self, li: int, mi: int, m: nn.Module):
        original = type(m).forward.__get__(m)
        scale = m.scaling[self.adapter]
        # s (B H) = B (s H) exactly when s is a power of two (alpha = 2r gives s = 2): then the layer
        # scales H once and the three addmm run with alpha = 1, whose backward needs no scaling kernels
        exact = math.frexp(scale)[0] == 0.5

        def forward(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            outs = self._outs[li]
            if mi > 0 and outs is not None and self._inputs[li] is x and not (args or kwargs):
                return outs[mi]  # this layer's query call computed it for this input (one node)
            if args or kwargs or m.disable_adapters or m.merged or self.adapter not in m.active_adapters:
                return original(x, *args, **kwargs)
            if mi == 0 or self._inputs[li] is not x:
                spec = self._product_spec(li, x)
                if spec is not None:
                    return self._run_product(li, x, spec)[mi]
                dtype = self._branch_applies(li, x)
                if dtype is not None:
                    return self._run_branch(li, x, dtype)[mi]
                self._outs[li] = None
            base = m.base_layer(x)
            # query (called first) computes the layer's features; key and value reuse them when they
            # see the same tensor.  Query never reads the previous call's state, so a compiled student
            # is not re-traced when a pass leaves it behind (evaluation does not clear the recorder).
            if mi == 0 or self._inputs[li] is not x:
                self._inputs[li] = x
                a, bs = self._weights(li, x.device.type)
                feats = self._features(li, x, a)
                self._feats[li] = feats
                self._shapes[li] = tuple(x.shape[:-1])
                # unbind: one backward operation for the three pieces (indexing would give three)
                self._scaled[li] = (feats * scale if exact else feats).unbind(0)
                self._b[li] = bs
            h = self._scaled[li][mi]
            out = torch.addmm(base.reshape(-1, base.shape[-1]), h, self._b[li][mi].T, alpha=1.0 if exact else scale)
            return out.view(base.shape)

        return forward

    def get(self, layer: int, module: str) -> torch.Tensor:
        h = self._feats[layer]
        if h is None:
            raise RuntimeError("no features recorded; run a forward pass first")
        return h[LORA_TARGETS.index(module)].reshape(*self._shapes[layer], -1)

    def stacked(self) -> torch.Tensor:
        """``[batch, tokens, layers, 3, r]`` of the last forward pass.

        One stack of the ``[3, N, r]`` records (``[L, 3, N, r]``) seen through a permuted view, so it
        is not contiguous; :func:`~paperlib.loraild.losses.ild_loss_layers` reads it as it is.
        """
        if any(h is None for h in self._feats):
            raise RuntimeError("no features recorded; run a forward pass first")
        shapes = set(self._shapes)
        if len(shapes) != 1:
            raise RuntimeError(f"layers saw inputs of different shapes {sorted(shapes)}; run one forward pass")
        lead = shapes.pop()
        allf = torch.stack(self._feats)  # type: ignore[arg-type]  # [L, 3, N, r]
        n_lead = len(lead)
        feats = allf.view(self.n_layers, len(LORA_TARGETS), *lead, allf.shape[-1])
        return feats.permute(*range(2, 2 + n_lead), 0, 1, 2 + n_lead)

    def clear(self) -> None:
        self._inputs = [None] * self.n_layers
        self._feats = [None] * self.n_layers
        self._scaled = [None] * self.n_layers
        self._b = [None] * self.n_layers
        self._outs = [None] * self.n_layers

    def remove(self) -> None:
        """Give the modules back their own (peft) forward."""
        for mods in self.layers:
            for m in mods:
                m.__dict__.pop("forward", None)
        self.clear()

    def __enter__(self) -> "FusedLoraRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


__all__ = ["KERNELS", "FusedLoraRecorder", "dropout_lora_a_torch"]
