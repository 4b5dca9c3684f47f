"""Models with LoRA, the LoRA-A hooks (eq. 3's h_x), the half-depth student and the teacher cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from paperlib.loraild.encoding import Collator, encode, make_loader
from paperlib.loraild.features import LoraFeatureRecorder, align_teacher, concat_tokens, lora_a_modules
from paperlib.loraild.models import (build_student, build_teacher, encoder_layers, load_classifier,
                                     load_tokenizer)
from paperlib.loraild.tasks import load_task
from paperlib.loraild.teacher_cache import compute_parts, teacher_forward, TeacherCache


def _batch(tiny, n=6, pad_to_max=False, max_length=16):
    tok = load_tokenizer(tiny.teacher)
    data = load_task("rte", str(tiny.glue))
    enc = encode(data.train.iloc[:n], tok, max_length)
    return next(iter(make_loader(enc, n, Collator(tok.pad_token_id, max_length, pad_to_max)))), enc, tok


def test_trainable_parameters(tiny):
    torch.manual_seed(0)
    teacher = build_teacher(tiny.teacher, 2, rank=4)
    names = [n for n, p in teacher.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or "classifier" in n for n in names)
    assert any("lora_A" in n for n in names) and any("classifier" in n for n in names)
    lora = [m for m in teacher.modules() if hasattr(m, "lora_alpha")]
    assert lora and all(m.scaling["default"] == 2.0 for m in lora)  # alpha = 2r
    assert all(m.lora_dropout["default"].p == 0.05 for m in lora)
    student = build_student(tiny.student, 2, rank=4)
    assert all(p.requires_grad for p in student.parameters())
    assert len(lora_a_modules(student)) == 2
    plain = build_student(tiny.student, 2, rank=None)
    assert not any("lora" in n for n, _ in plain.named_parameters())


def test_hooks_capture_x_times_A_transpose(tiny):
    torch.manual_seed(0)
    teacher = build_teacher(tiny.teacher, 2, rank=4).eval()
    batch, _, _ = _batch(tiny)
    inputs = {}
    handles = []
    for li, layer in enumerate(encoder_layers(teacher)):
        for name in ("query", "key", "value"):
            mod = getattr(layer.attention.self, name)
            handles.append(mod.register_forward_hook(
                lambda m, i, o, key=(li, name): inputs.__setitem__(key, i[0].detach())))
    with LoraFeatureRecorder(teacher) as rec:
        teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        stacked = rec.stacked()
        mods = lora_a_modules(teacher)
        assert stacked.shape == (6, batch["input_ids"].shape[1], 4, 3, 4)
        for (li, name), x in inputs.items():
            a = mods[li][name].weight  # [r, d]
            expected = x @ a.T
            assert torch.allclose(rec.get(li, name), expected, atol=1e-6)
            assert torch.allclose(stacked[:, :, li, ("query", "key", "value").index(name)], expected, atol=1e-6)
            assert expected.abs().max() > 0
    for h in handles:
        h.remove()


def test_align_and_concatenate():
    f = torch.arange(2 * 3 * 4 * 3 * 2, dtype=torch.float).view(2, 3, 4, 3, 2)
    assert torch.equal(align_teacher(f, [[1], [3]]), f[:, :, [1, 3]])
    avg = align_teacher(f, [[0, 1], [2, 3]])
    assert torch.allclose(avg[:, :, 0], (f[:, :, 0] + f[:, :, 1]) / 2)
    assert torch.allclose(avg[:, :, 1], (f[:, :, 2] + f[:, :, 3]) / 2)
    assert concat_tokens(avg).shape == (2, 3, 2 * 3 * 2)
    # groups that are not consecutive layers take the indexed path
    odd = align_teacher(f, [[0, 2], [3]])
    assert torch.allclose(odd[:, :, 0], (f[:, :, 0] + f[:, :, 2]) / 2)
    assert torch.equal(odd[:, :, 1], f[:, :, 3])


def test_half_depth_student_copies_every_other_layer(tiny):
    full = load_classifier(tiny.teacher, 2)
    half = load_classifier("half:" + tiny.teacher, 2)
    assert len(encoder_layers(half)) == 2 and half.config.num_hidden_layers == 2
    for kept, orig in zip(encoder_layers(half), (0, 2)):
        for (n1, p1), (n2, p2) in zip(kept.named_parameters(), encoder_layers(full)[orig].named_parameters()):
            assert n1 == n2 and torch.equal(p1, p2)
    assert torch.equal(half.roberta.embeddings.word_embeddings.weight, full.roberta.embeddings.word_embeddings.weight)
    out = half(input_ids=torch.tensor([[2, 5, 6, 3]]), output_hidden_states=True)
    assert len(out.hidden_states) == 3


def test_a_half_students_description_names_the_layers_it_keeps(tiny):
    """What the chapter prints for a half student names the layers ``keep_every_other_layer`` keeps: those of a
    6-layer encoder made half (the embedded MiniLM-L6 has 6) are the ones the description lists."""
    from transformers import BertConfig, BertForSequenceClassification

    from paperlib.loraild.models import describe, keep_every_other_layer

    full = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=6,
                                                    num_attention_heads=2, intermediate_size=16))
    ids = [id(layer) for layer in encoder_layers(full)]
    kept = [ids.index(id(layer)) for layer in encoder_layers(keep_every_other_layer(full))]
    text = describe("minilm-l6-half")
    assert text.startswith(f"layers {', '.join(map(str, kept[:-1]))} and {kept[-1]} ({len(kept)} layers) of ")
    assert "6 layers" in text and describe("minilm-l6") in text
    assert describe(f"half:{tiny.teacher}").startswith("every other layer (0, 2, 4, ...) of ")


def test_cached_teacher_outputs_equal_live_ones(tiny):
    torch.manual_seed(0)
    teacher = build_teacher(tiny.teacher, 2, rank=4).eval()
    _, enc, tok = _batch(tiny, n=10)
    # cache computed on max-length padded batches of 4, looked up for a differently padded batch
    loader = make_loader(enc, 4, Collator(tok.pad_token_id, 16, pad_to_max=True))
    cache = TeacherCache(compute_parts(teacher, loader, ("logits", "lora", "pooled"), True, "cpu"))
    live_loader = make_loader(enc, 10, Collator(tok.pad_token_id, 16))
    batch = next(iter(live_loader))
    with LoraFeatureRecorder(teacher) as rec:
        live = teacher_forward(teacher, batch, rec, need_pooled=True)
    idx = batch["idx"]
    looked = cache.lookup(idx, batch["input_ids"].shape[1], "cpu")
    mask = batch["attention_mask"].bool()
    assert torch.allclose(looked.logits, live.logits, atol=1e-5)
    assert torch.allclose(looked.pooled, live.pooled, atol=1e-5)
    assert torch.allclose(looked.lora[mask], live.lora[mask], atol=1e-5)
    assert (looked.lora[~mask] == 0).all()
    # a batch cut shorter than the stored sequences reads their first tokens
    short = cache.lookup(idx, 3, "cpu")
    assert short.lora.shape[1] == 3
    assert torch.allclose(short.lora[mask[:, :3]], live.lora[:, :3][mask[:, :3]], atol=1e-5)
    # a moved cache gives the same values and reports its size
    moved = cache.to("cpu")
    assert moved.nbytes() == cache.nbytes() > 0
    assert torch.equal(moved.lookup(idx, batch["input_ids"].shape[1], "cpu").lora, looked.lora)


def test_cache_without_padding_mask_keeps_every_position(tiny):
    """mask_padding=False stores each example's full padded row, token for token as the teacher's
    recorded features (written out per example here; the cache selects them batch-wise)."""
    torch.manual_seed(0)
    teacher = build_teacher(tiny.teacher, 2, rank=4).eval()
    _, enc, tok = _batch(tiny, n=6)
    loader = make_loader(enc, 4, Collator(tok.pad_token_id, 16, pad_to_max=True))
    store = compute_parts(teacher, loader, ("logits", "lora"), False, "cpu")["lora"]
    expected = []
    with LoraFeatureRecorder(teacher) as rec:
        for batch in loader:
            feats = teacher_forward(teacher, batch, rec, need_pooled=False, mask_padding=False).lora
            expected += [feats[row].flatten(1) for row in range(feats.shape[0])]
    assert torch.equal(store["offsets"], torch.arange(0, 16 * 7, 16))
    assert torch.allclose(store["flat"], torch.cat(expected).float(), atol=1e-6)


def test_device_copy_of_the_cache_is_reused_by_the_next_run_and_dropped_when_not_read(tmp_path):
    """``on_device`` moves a part once per process and device (a sweep lane's next run reuses it),
    moves it again when the host value changed (read anew), and drops parts the run does not read.
    The ``meta`` device makes the moves observable on the CPU: each move is a new meta tensor."""
    from paperlib.loraild import teacher_cache as tc

    tc.clear_memory()
    logits = torch.randn(5, 2)
    lora = {"flat": torch.randn(20, 6), "offsets": torch.arange(0, 25, 5), "shape": (1, 3, 2)}
    a, b = tmp_path / "task-a", tmp_path / "task-b"
    try:
        first = tc.on_device(a, TeacherCache({"logits": logits, "lora": lora}), "meta")
        assert first.parts["logits"].device.type == "meta" and first.parts["lora"]["shape"] == (1, 3, 2)
        again = tc.on_device(a, TeacherCache({"logits": logits, "lora": lora}), "meta")
        assert again.parts["logits"] is first.parts["logits"]
        assert again.parts["lora"]["flat"] is first.parts["lora"]["flat"]
        # a run reading only the logits: the LoRA part leaves the device, the logits stay
        only = tc.on_device(a, TeacherCache({"logits": logits}), "meta")
        assert only.parts["logits"] is first.parts["logits"]
        assert [k for k in tc._ON_DEVICE] == [("meta", f"{a}/logits")]
        # the same part read anew (another host object) or another folder: moved again
        reread = tc.on_device(a, TeacherCache({"logits": logits.clone()}), "meta")
        assert reread.parts["logits"] is not first.parts["logits"]
        other = tc.on_device(b, TeacherCache({"logits": logits}), "meta")
        assert other.parts["logits"] is not reread.parts["logits"]
        assert list(tc._ON_DEVICE) == [("meta", f"{b}/logits")]
        tc.release_device()
        assert not tc._ON_DEVICE
    finally:
        tc.clear_memory()


SHARDED_READ = '''
import sys, torch, torch.distributed as dist
from pathlib import Path
from paperlib.loraild import teacher_cache as tc
dist.init_process_group("gloo")
rank = dist.get_rank()
folders = [Path(p) for p in sys.argv[1:3]]
for folder in folders:
    parts = ("logits", "lora", "pooled") if (folder / "pooled.safetensors").exists() else ("logits", "lora")
    got = tc.read_sharded(folder, parts, "cpu")
    for part in parts:
        want = tc.read_part(tc.part_path(folder, part), part)
        if part == "lora":
            assert torch.equal(got.parts[part]["flat"], want["flat"]), (rank, part)
            assert torch.equal(got.parts[part]["offsets"], want["offsets"]) and got.parts[part]["shape"] == want["shape"]
        else:
            assert torch.equal(got.parts[part], want), (rank, part)
again = tc.read_sharded(folders[1], ("logits", "lora"), "cpu")
assert again.parts["logits"] is got.parts["logits"]  # held for the next run
assert tc.read_sharded(Path(sys.argv[3]), ("logits",), "cpu") is None  # incomplete: no collective started
Path(sys.argv[4], f"rank{rank}").write_text("ok")
'''


def test_each_process_reads_a_share_of_the_cache_and_gathers_the_rest(tmp_path):
    """Two gloo processes each read half the rows of every part (odd counts; one process with no
    row at all) and all-gather the rest: the parts equal a whole read; a truncated file gives None
    in every process before any collective."""
    import subprocess
    import sys

    from paperlib.loraild import teacher_cache as tc

    torch.manual_seed(0)
    odd, one, cut = tmp_path / "odd", tmp_path / "one", tmp_path / "cut"
    for folder, n, rows in ((odd, 7, 13), (one, 1, 3)):
        folder.mkdir()
        tc.save_part(tc.part_path(folder, "logits"), "logits", torch.randn(n, 2))
        tc.save_part(tc.part_path(folder, "lora"), "lora", {"flat": torch.randn(rows, 6),
                                                           "offsets": torch.linspace(0, rows, n + 1).long(),
                                                           "shape": (1, 3, 2)})
    tc.save_part(tc.part_path(odd, "pooled"), "pooled", torch.randn(7, 3, 4))
    cut.mkdir()
    tc.save_part(tc.part_path(cut, "logits"), "logits", torch.randn(9, 2))
    data = tc.part_path(cut, "logits").read_bytes()
    tc.part_path(cut, "logits").write_bytes(data[:-8])  # a write cut short
    assert tc.whole_file(tc.part_path(odd, "logits")) and tc.whole_file(tc.part_path(cut, "logits")) is None
    script = tmp_path / "read.py"
    script.write_text(SHARDED_READ)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(odd), str(one), str(cut), str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.glob("rank*")) == ["rank0", "rank1"]


def _roberta(attn: str):
    from transformers import RobertaConfig, RobertaForSequenceClassification
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=40, pad_token_id=1,
                        attn_implementation=attn)
    return RobertaForSequenceClassification(cfg).eval()


def test_forward_mask_is_chosen_on_the_host_and_changes_no_output(monkeypatch):
    """The padded flag picks the mask without asking the device; logits equal transformers' own."""
    import transformers.masking_utils as mu

    from paperlib.loraild.models import attention_mask_input, forward_kwargs

    asked = []  # masks transformers' SDPA path would inspect on the device (a host-device sync on a GPU)
    real = mu._ignore_bidirectional_mask_sdpa
    monkeypatch.setattr(mu, "_ignore_bidirectional_mask_sdpa",
                        lambda mask, *a, **k: (asked.append(mask is not None), real(mask, *a, **k))[1])
    collate = Collator(pad_id=1, max_length=12)
    items = [{"idx": i, "input_ids": list(range(3, 3 + n)), "label": 0} for i, n in enumerate((7, 4, 7))]
    for attn in ("sdpa", "eager"):
        model = _roberta(attn)
        for batch in (collate(items), collate([items[0], items[2]])):
            kw = forward_kwargs(model, batch)
            asked.clear()
            with torch.no_grad():
                ours = model(**kw).logits
                if attn == "sdpa":
                    assert not any(asked), "the SDPA mask builder was handed a mask to inspect"
                theirs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
            mask = kw["attention_mask"]
            if not batch["padded"]:
                assert mask is None
            elif attn == "sdpa":
                assert mask.shape == (3, 1, 7, 7) and mask.dtype == torch.bool
                assert mask[1, 0].tolist() == [[True] * 4 + [False] * 3] * 7
            else:
                assert mask is batch["attention_mask"]
    # a batch without the flag (made by hand) keeps the [B, T] mask: no guess about its padding
    bare = {k: v for k, v in collate(items).items() if k != "padded"}
    assert attention_mask_input(_roberta("sdpa").config, bare) is bare["attention_mask"]


def test_embedded_model_pins_are_the_ones_the_setup_installs():
    """Both lists of embedded models (the analysed ones, and the encoders LoRAILD trains, which share
    MiniLM-L6's entry) name the packages (and versions) that
    requirements-embedded.txt installs: a version bumped in one place only would look for weights
    that the setup does not install (the split-zip mpnet parts are optional, not in that file)."""
    from paperlib.data.models import EMBEDDED_MODELS as analysed
    from paperlib.data.models import EmbeddedModel
    from paperlib.loraild.models import EMBEDDED_MODELS as trained

    text = (Path(__file__).resolve().parents[2] / "requirements-embedded.txt").read_text()
    installed = {ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")}
    assert {m.pip for m in analysed.values()} <= installed
    pins = {spec.pip for spec in trained.values() if isinstance(spec, EmbeddedModel)}
    assert pins and pins <= installed


def test_one_model_load_error_and_one_quiet_loader_for_both_analyses():
    """LoRAILD raises the swap analysis's ``ModelLoadError`` (one ``except`` catches both), and the one
    ``quiet_transformers`` silences loading's deprecation chatter while letting other warnings through."""
    import warnings

    from paperlib.data import models as data_models
    from paperlib.loraild import models as loraild_models

    assert loraild_models.ModelLoadError is data_models.ModelLoadError
    assert loraild_models.quiet_transformers is data_models.quiet_transformers
    with pytest.raises(data_models.ModelLoadError, match="no-such-model-xyz"):
        loraild_models.load_tokenizer("no-such-model-xyz")  # offline (conftest): a hub name fails at once
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with data_models.quiet_transformers():
            warnings.warn("old argument", FutureWarning)
            warnings.warn("a real problem", UserWarning)
    assert [type(w.message) for w in seen] == [UserWarning]

