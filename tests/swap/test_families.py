"""Every decoder / encoder family the swap analysis supports, on a tiny random model of each.

The identity-layer test: zero the output projections of one block (attention output and MLP
output), so the block returns its input unchanged.  Then ``A = 0`` (nothing to fit), ``Trans = 0``
and the layer commutes with its neighbours, so ``r = delta = 0`` for its two pairs, while the pair
that does not involve it keeps ``r, delta > 0``.  Post-LN encoders (BERT, RoBERTa, MPNet) compute
``LN(X + f(X))``: with ``f = 0`` the block is the identity only on states that are already
normalised, so the test also gives the norms before and inside that block unit gain and zero bias.

The block lists and output projections are written out here per family (independent of
``find_blocks``).  Families missing from the installed transformers are skipped with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import transformers
from paperlib.data.tokens import batches
from paperlib.swap.analysis import fit_layers, measure_swaps, pair_rows
from paperlib.swap.blocks import ResidualStack, UnsupportedModelError, find_blocks

N_LAYERS, D, VOCAB = 4, 32, 100
ZEROED = 1  # 0-based block whose output projections are zeroed: pairs (1, 2) and (2, 3) in 1-based rows
DEC = dict(num_hidden_layers=N_LAYERS, hidden_size=D, intermediate_size=64, num_attention_heads=4,
           num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64, pad_token_id=0,
           bos_token_id=0, eos_token_id=0)
ENC = dict(num_hidden_layers=N_LAYERS, hidden_size=D, intermediate_size=64, num_attention_heads=2,
           vocab_size=VOCAB, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
           max_position_embeddings=70, pad_token_id=1, bos_token_id=0, eos_token_id=2)


@dataclass(frozen=True)
class Family:
    config: str  # transformers config class
    kwargs: dict
    blocks: str  # where the base model keeps its block list
    outputs: tuple[str, ...]  # output projections inside a block (zeroed: the block becomes X -> X)
    post_ln: tuple[str, ...] = ()  # post-LN encoders: norms inside the block (set to gain 1, bias 0)
    embed_ln: str = ""  # post-LN encoders: the norm of the embeddings (the input of block 0)


FAMILIES: dict[str, Family] = {
    "gpt2": Family("GPT2Config", dict(n_layer=N_LAYERS, n_embd=D, n_head=2, n_positions=64, vocab_size=VOCAB,
                                      bos_token_id=0, eos_token_id=0), "h", ("attn.c_proj", "mlp.c_proj")),
    "llama": Family("LlamaConfig", DEC, "layers", ("self_attn.o_proj", "mlp.down_proj")),
    "mistral": Family("MistralConfig", DEC, "layers", ("self_attn.o_proj", "mlp.down_proj")),
    "mixtral": Family("MixtralConfig", {**DEC, "num_local_experts": 4, "num_experts_per_tok": 2}, "layers",
                      ("self_attn.o_proj", "mlp.experts.down_proj", "block_sparse_moe.experts")),
    "qwen2": Family("Qwen2Config", DEC, "layers", ("self_attn.o_proj", "mlp.down_proj")),
    "gemma2": Family("Gemma2Config", {**DEC, "head_dim": 8}, "layers", ("self_attn.o_proj", "mlp.down_proj")),
    "phi3": Family("Phi3Config", DEC, "layers", ("self_attn.o_proj", "mlp.down_proj")),
    "gpt_neox": Family("GPTNeoXConfig", {k: v for k, v in DEC.items() if k != "num_key_value_heads"}, "layers",
                       ("attention.dense", "mlp.dense_4h_to_h")),
    "opt": Family("OPTConfig", dict(num_hidden_layers=N_LAYERS, hidden_size=D, ffn_dim=64, num_attention_heads=4,
                                    vocab_size=VOCAB, max_position_embeddings=64, word_embed_proj_dim=D,
                                    pad_token_id=1, bos_token_id=2, eos_token_id=2),
                  "decoder.layers", ("self_attn.out_proj", "fc2")),
    "falcon": Family("FalconConfig", dict(num_hidden_layers=N_LAYERS, hidden_size=D, num_attention_heads=4,
                                          vocab_size=VOCAB, bos_token_id=0, eos_token_id=0),
                     "h", ("self_attention.dense", "mlp.dense_4h_to_h")),
    "bert": Family("BertConfig", {**ENC, "pad_token_id": 0}, "encoder.layer", ("attention.output.dense", "output.dense"),
                   ("attention.output.LayerNorm", "output.LayerNorm"), "embeddings.LayerNorm"),
    "roberta": Family("RobertaConfig", ENC, "encoder.layer", ("attention.output.dense", "output.dense"),
                      ("attention.output.LayerNorm", "output.LayerNorm"), "embeddings.LayerNorm"),
    "mpnet": Family("MPNetConfig", ENC, "encoder.layer", ("attention.attn.o", "output.dense"),
                    ("attention.LayerNorm", "output.LayerNorm"), "embeddings.LayerNorm"),
}


def _get(module: nn.Module, path: str):
    for part in path.split("."):
        module = getattr(module, part, None)
        if module is None:
            return None
    return module


def build(arch: str) -> tuple[nn.Module, Family]:
    fam = FAMILIES[arch]
    cls = getattr(transformers, fam.config, None)
    if cls is None:
        pytest.skip(f"transformers {transformers.__version__} has no {fam.config}")
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(cls(**fam.kwargs)).eval()
    # larger weights and random norm gains (as in trained models): swaps change the output measurably
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "embed" not in name and "wte" not in name and "wpe" not in name:
                p.mul_(3.0)
            elif p.dim() == 1 and "norm" in name.lower():
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn(p.shape, generator=g))
    return model, fam


def make_identity(model: nn.Module, fam: Family, k: int) -> None:
    """Zero block ``k``'s output projections (and, post-LN, make the norms around it plain).

    Post-LN: block ``k`` then maps a state to its plain normalisation, the identity on states that
    plain norms produce: those of blocks ``k - 2``, ``k - 1`` (or the embeddings) and ``k + 1``
    (their outputs ``X_{k-1}``, ``X_k`` and ``L_{k+1}(X_k)`` are what the swaps feed block ``k``)."""
    blocks = _get(model, fam.blocks)
    zeroed = 0
    with torch.no_grad():
        for path in fam.outputs:
            target = _get(blocks[k], path)
            if isinstance(target, nn.Module):
                for p in target.parameters():
                    p.zero_()
                    zeroed += 1
            elif isinstance(target, torch.Tensor):
                target.zero_()
                zeroed += 1
        if fam.post_ln:
            before = [_get(blocks[j], fam.post_ln[-1]) for j in (k - 2, k - 1, k + 1) if j >= 0]
            if k < 2:
                before.append(_get(model, fam.embed_ln))
            for norm in [_get(blocks[k], p) for p in fam.post_ln] + before:
                norm.weight.fill_(1.0)
                norm.bias.zero_()
    assert zeroed >= 2, f"found no output projections {fam.outputs} in {type(blocks[k]).__name__}"


def token_batches(seed: int, n_seqs: int, pad_id: int):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(14, 25, (n_seqs,), generator=g).tolist()
    seqs = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in lengths]
    return batches(seqs, 4, pad_id=pad_id)


@pytest.mark.parametrize("arch", list(FAMILIES))
def test_block_list_found_by_rule_and_identity_layer_gives_zero_r_and_delta(arch):
    model, fam = build(arch)
    assert find_blocks(model) is _get(model, fam.blocks)
    make_identity(model, fam, ZEROED)
    stack = ResidualStack(model)
    assert stack.n_layers == N_LAYERS
    pad = model.config.pad_token_id or 0
    ridge = 1e-8 if fam.post_ln else 0.0  # post-LN: the normalised states span d - 1 dimensions
    fit = fit_layers(stack, token_batches(0, 12, pad), ridge=ridge, progress=False)
    swaps = measure_swaps(stack, token_batches(1, 8, pad), fit, progress=False)
    rows = pair_rows(fit, swaps)
    tol = 1e-4 if fam.post_ln else 1e-6
    for row in rows[ZEROED - 1 : ZEROED + 1]:  # the two pairs of the identity block
        assert abs(row["r"]) < tol, (arch, row)
        assert abs(row["delta"]) < tol, (arch, row)
        assert abs(row["delta_lin"]) < tol, (arch, row)
    other = rows[ZEROED + 1]  # blocks 3 and 4 (1-based): untouched, must not commute
    assert other["r"] > 1e-3 and other["delta"] > 1e-3, (arch, other)


def test_rule_finds_the_blocks_of_models_with_heads():
    model, _ = build("opt")
    lm = transformers.OPTForCausalLM(model.config)
    assert find_blocks(lm) is lm.model.decoder.layers
    model, _ = build("mixtral")
    lm = transformers.AutoModelForCausalLM.from_config(model.config)
    assert find_blocks(lm) is lm.model.layers


def _vit():
    return transformers.ViTModel(transformers.ViTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                                        intermediate_size=32, image_size=8, patch_size=4))


def _mamba():
    return transformers.MambaModel(transformers.MambaConfig(hidden_size=16, num_hidden_layers=2, vocab_size=VOCAB,
                                                            state_size=4))


def _jamba():
    return transformers.JambaModel(transformers.JambaConfig(
        hidden_size=16, num_hidden_layers=2, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1,
        vocab_size=VOCAB, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, num_experts=2,
        mamba_d_state=4, use_mamba_kernels=False))


@pytest.mark.parametrize(("make", "words"), [
    (_vit, ["not a text model", "pixel_values"]),
    (_mamba, ["MambaBlock", "without attention", "Mamba-style"]),
    (_jamba, ["JambaMambaDecoderLayer", "without attention"]),
], ids=["vit", "mamba", "jamba-hybrid"])
def test_non_text_and_attention_free_models_are_refused_in_one_line(make, words):
    try:
        model = make()
    except AttributeError as err:  # class missing from this transformers
        pytest.skip(str(err))
    with pytest.raises(UnsupportedModelError) as info:
        ResidualStack(model)
    msg = str(info.value)
    assert "\n" not in msg and type(model).__name__ in msg
    for w in words:
        assert w in msg
    assert "Llama" in msg  # names what is supported
