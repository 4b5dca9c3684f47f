"""The C++ q/k/v product (paperlib.loraild.qkv_native) against the Python one it twins: the same values
bit for bit from the same random state, in the product alone and in a whole student; how the recorder
chooses it; and a clean fallback where it cannot be built."""

from __future__ import annotations

import types

import pytest
import torch

from paperlib.loraild import qkv_native
from paperlib.loraild.fused_lora import FusedLoraRecorder
from paperlib.loraild.qkv_product import ProductSpec

from test_loraild_fused_lora import batch, tiny_student
from test_loraild_qkv_product import _apply, _leaves


@pytest.fixture(scope="module")
def native():
    """The built extension (about a minute the first time on a machine), or a skip naming why not."""
    try:
        return qkv_native.load()
    except RuntimeError as e:
        pytest.skip(str(e))


def _native_apply(leaves, spec, seed=7):
    x, wq, wk, wv, bq, bk, bv, aq, ak, av, blq, blk, blv = leaves
    linears = tuple(types.SimpleNamespace(weight=w, bias=b) for w, b in ((wq, bq), (wk, bk), (wv, bv)))
    torch.manual_seed(seed)
    return qkv_native.qkv_lora(x, linears, (aq, ak, av), (blq, blk, blv), spec)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


@pytest.mark.parametrize("p", [0.0, 0.3])
@pytest.mark.parametrize("outs", [(12, 12, 10), (12, 12, 12)])
@pytest.mark.parametrize("dtype", ["float64", "bfloat16"])
@pytest.mark.parametrize("device", DEVICES)
def test_cpp_product_equals_the_python_product_bit_for_bit(native, p, outs, dtype, device):
    """Outputs, features and every gradient (x, W, b, A, B, with a gradient on the features) identical:
    fp64, and fp32 parameters computed in bf16 with fp32 gradients (autocast's arrangement)."""
    compute = getattr(torch, dtype)
    leaves = _leaves(outs=outs, dtype=torch.float64 if dtype == "float64" else torch.float32)
    leaves = [t.detach().to(device).requires_grad_() for t in leaves]
    spec = ProductSpec(p=p, scale=0.75, dtype=compute)
    got = {}
    for name, fn in (("python", _apply), ("cpp", _native_apply)):
        outputs = fn(leaves, spec)
        loss = sum((o.double() ** 2).sum() * (i + 1) for i, o in enumerate(outputs))
        got[name] = [o.detach() for o in outputs] + list(torch.autograd.grad(loss, leaves))
    for i, (a, b) in enumerate(zip(got["python"], got["cpp"])):
        assert a.dtype == b.dtype and torch.equal(a, b), f"tensor {i}"


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_student_with_the_cpp_product_trains_as_with_the_python_one(native, autocast, device):
    """A LoRA student with dropout, recorder ``native="on"`` against ``"off"`` from the same seed: logits,
    the ILD record and every parameter's gradient identical; the gradients are stored as the op returns
    them (the three A's share one tensor)."""
    models = {}
    for mode in ("off", "on"):
        model = tiny_student(0.2).to(device)
        model.train()
        rec = FusedLoraRecorder(model, native=mode)
        torch.manual_seed(5)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
            logits = model(**{k: v.to(device) for k, v in batch().items()}).logits
            feats = rec.stacked()
            loss = logits.float().square().sum() + feats.float().square().sum()
        loss.backward()
        models[mode] = (model, logits.detach(), feats.detach(), rec)
    (m_off, lo_off, f_off, _), (m_on, lo_on, f_on, rec_on) = models["off"], models["on"]
    assert torch.equal(lo_off, lo_on) and torch.equal(f_off, f_on)
    grads = dict(m_off.named_parameters())
    for name, p in m_on.named_parameters():
        assert torch.equal(p.grad, grads[name].grad), name
    a_grads = [m.lora_A["default"].weight.grad for m in rec_on.layers[0]]
    assert len({g.untyped_storage().data_ptr() for g in a_grads}) == 1


def test_auto_keeps_python_on_the_cpu(monkeypatch):
    """``native="auto"`` runs the C++ product only on CUDA inputs: a CPU student never calls it."""
    def refuse(*args, **kwargs):
        raise AssertionError("the C++ product ran on a CPU input under native='auto'")

    monkeypatch.setattr(qkv_native, "qkv_lora", refuse)
    model = tiny_student(0.2)
    model.train()
    FusedLoraRecorder(model)
    model(**batch()).logits.sum().backward()


def test_a_failed_build_leaves_the_python_product_and_says_why(monkeypatch, capsys):
    """No compiler or ninja: the build's failure is said once in one line, ``available()`` is False,
    ``"auto"`` keeps Python even for CUDA inputs, and ``"on"`` refuses with one line naming what is missing."""
    from torch.utils import cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions\n(long build log)")

    monkeypatch.setattr(qkv_native, "_ext", None)
    monkeypatch.setattr(qkv_native, "_error", None)
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    assert not qkv_native.available()
    assert not qkv_native.available()
    said = [line for line in capsys.readouterr().err.splitlines() if "could not be built" in line]
    assert len(said) == 1 and "using the Python product" in said[0]
    rec = FusedLoraRecorder(tiny_student(0.0))
    assert rec._native(types.SimpleNamespace(is_cuda=True)) is False
    with pytest.raises(ValueError) as err:
        FusedLoraRecorder(tiny_student(0.0), native="on")
    msg = str(err.value)
    assert "\n" not in msg and "Ninja is required" in msg and "pip install ninja" in msg


def test_bad_native_setting_is_one_line():
    with pytest.raises(ValueError, match="native must be one of"):
        FusedLoraRecorder(tiny_student(0.0), native="yes")
