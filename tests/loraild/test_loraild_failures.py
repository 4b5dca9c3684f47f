"""Issue 12, paper B: nothing stale, nothing silent, nothing lost (LoRAILD runs and their files)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import paperlib.loraild.train as train_mod
from paperlib.__main__ import main
from paperlib.data.glue import GlueDataError, read_glue_tsv
from paperlib.locks import is_locked
from paperlib.loraild.models import TokenizerMismatchError
from paperlib.loraild.prepare import prepare_data
from paperlib.loraild.run_files import checkpoint_dir, experiment_dir, load_result, result_path, teacher_dir
from paperlib.loraild.train import run


def cli_args(tiny, results, *extra):
    return ["loraild", "--task", "sst2", "--glue-dir", str(tiny.glue), "--teacher", tiny.teacher,
            "--student", tiny.student, "--method", "wo_kd", "--epochs", "1", "--teacher-epochs", "1",
            "--rank", "4", "--lr", "1e-3", "--batch-size", "8", "--max-length", "16", "--max-train", "24",
            "--max-valid", "8", "--max-test", "8", "--device", "cpu", "--no-progress",
            *(["--results-dir", str(results)] if results else []), *extra]


def one_line_error(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and err.count("\n") == 1, err
    return err


# ------------------------------------------------------------------ 1. stale results


def test_keys_follow_the_content_of_the_glue_files(tiny, tmp_path):
    glue = tmp_path / "glue"
    shutil.copytree(tiny.glue, glue)
    cfg = tiny.config(glue_dir=str(glue), method="wo_kd")
    before_exp, before_teacher = experiment_dir(cfg), teacher_dir(cfg)
    train = glue / "SST-2" / "train.tsv"
    train.write_text(train.read_text().replace("good", "great"))  # a corrected file, same path
    assert experiment_dir(cfg) != before_exp and teacher_dir(cfg) != before_teacher


def test_another_glue_folder_is_another_result(tiny, tmp_path):
    """``--glue-dir`` pointing at a corrected folder must not return the broken folder's result."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny.glue, broken)
    train = broken / "SST-2" / "train.tsv"
    lines = train.read_text().splitlines()
    train.write_text("\n".join(lines[:1] + [ln.rsplit("\t", 1)[0] + "\t0" for ln in lines[1:]]) + "\n")
    a = tiny.config(glue_dir=str(broken), method="wo_kd", max_train=24, max_valid=8, max_test=8)
    b = a.replace(glue_dir=str(tiny.glue))
    run(a)
    assert result_path(a) != result_path(b) and load_result(b) is None
    def scores(result):  # the epochs' losses and scores (their timings differ between any two runs)
        return [(h["train"], h["valid_score"], h["test_score"]) for h in result["history"]]

    assert scores(run(b)) != scores(load_result(a))


def test_new_weights_at_the_same_path_are_new_keys(tiny, tmp_path):
    student, teacher = tmp_path / "student", tmp_path / "teacher"
    shutil.copytree(tiny.student, student)
    shutil.copytree(tiny.teacher, teacher)
    cfg = tiny.config(student=str(student), teacher=str(teacher))
    exp, tdir = experiment_dir(cfg), teacher_dir(cfg)
    from transformers import AutoModelForSequenceClassification

    for folder in (student, teacher):
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        with torch.no_grad():
            next(model.parameters()).add_(0.01)
        model.save_pretrained(folder)
    assert experiment_dir(cfg) != exp and teacher_dir(cfg) != tdir


# ------------------------------------------------------------------ 2. silently wrong training


def _save_student_with(tokenizer_words: list[str], tiny, folder: Path, vocab_size: int = 100) -> str:
    from transformers import BertTokenizerFast, RobertaConfig, RobertaForSequenceClassification

    folder.mkdir(parents=True)
    conf = RobertaConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=80, pad_token_id=0, type_vocab_size=2)
    RobertaForSequenceClassification(conf).save_pretrained(folder)
    BertTokenizerFast(vocab={w: i for i, w in enumerate(tokenizer_words)}).save_pretrained(folder)
    return str(folder)


def test_student_with_another_tokenizer_is_refused(tiny, tmp_path):
    words = (Path(tiny.teacher).parent / "vocab.txt").read_text().split()
    shuffled = words[:5] + list(reversed(words[5:]))  # same tokens, other ids: trains silently today
    student = _save_student_with(shuffled, tiny, tmp_path / "other_tok")
    with pytest.raises(TokenizerMismatchError, match=r"the student .*other_tok' was trained with another tokenizer"):
        prepare_data(tiny.config(student=student))


def test_run_tokenizer_beyond_the_students_embeddings_is_refused(tiny, tmp_path, capsys):
    words = (Path(tiny.teacher).parent / "vocab.txt").read_text().split()
    student = tmp_path / "small_vocab"
    _save_student_with(words, tiny, student, vocab_size=3)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (student / f).unlink(missing_ok=True)  # a student without a tokenizer of its own
    err = one_line_error(capsys, cli_args(tiny, tmp_path / "r", "--student", str(student)))
    assert "embeds only 3 tokens" in err and "--tokenizer" in err


@pytest.mark.parametrize("content, expected", [
    ("sentence\tlabel\nfine film\tpositive\n", r"train.tsv line 2: label 'positive' is not 0 or 1"),
    ("sentence\tlabel\nfine film\t1\nbad one\t2\n", r"train.tsv line 3: label '2' is not 0 or 1"),
    ("text\tlabel\nfine film\t1\n", r"train.tsv: the header has no column 'sentence'"),
    ("", r"train.tsv is empty"),
    ("sentence\tlabel\n", r"train.tsv has no data rows"),
    ("sentence\tlabel\nno label here\nnor here\n", r"no row has the 2 tab-separated fields"),
], ids=["word-label", "label-2", "missing-column", "empty", "header-only", "all-short"])
def test_bad_glue_rows_are_errors_naming_file_and_row(tiny, tmp_path, capsys, content, expected):
    glue = tmp_path / "glue"
    shutil.copytree(tiny.glue, glue)
    (glue / "SST-2" / "train.tsv").write_text(content)
    with pytest.raises(GlueDataError, match=expected):
        read_glue_tsv("sst2", glue / "SST-2" / "train.tsv")
    err = one_line_error(capsys, cli_args(tiny, tmp_path / "r", "--glue-dir", str(glue)))
    assert str(glue / "SST-2" / "train.tsv") in err


# ------------------------------------------------------------------ 3. no code runs when results are read


class _Payload:
    """Pickles to a call that writes a marker file: what a crafted results file could run."""

    marker: str = ""

    def __reduce__(self):
        return (Path(self.marker).write_text, ("code ran",))


def test_crafted_checkpoint_runs_no_code(tiny, tmp_path, capsys):
    cfg = tiny.config(method="wo_kd", max_train=24, max_valid=8, max_test=8, epochs=2, checkpoint=True,
                      results_dir=str(tmp_path / "r"))
    marker = tmp_path / "marker"
    _Payload.marker = str(marker)
    last = checkpoint_dir(cfg) / "last.pt"
    last.parent.mkdir(parents=True)
    torch.save({"epoch": 0, "state": _Payload(), "optimizer": {}, "history": [], "best": {}, "rng": {}}, last)
    result = run(cfg)
    assert not marker.exists()
    assert f"{last} is damaged" in capsys.readouterr().err
    assert [h["epoch"] for h in result["history"]] == [0, 1]  # started afresh


def test_teacher_and_its_cache_are_safetensors(tiny, tmp_path):
    cfg = tiny.config(method="loraild_fixed", max_train=24, max_valid=8, max_test=8, results_dir=str(tmp_path / "r"))
    run(cfg)
    tdir = teacher_dir(cfg)
    assert (tdir / "teacher.safetensors").exists() and not list(tdir.rglob("*.pt"))
    parts = sorted(p.name for p in tdir.rglob("cache-*/*.safetensors"))
    assert parts == ["logits.safetensors", "lora.safetensors"]


def test_checkpoint_rng_state_loads_with_weights_only(tiny, tmp_path, monkeypatch):
    cfg = tiny.config(method="wo_kd", max_train=24, max_valid=8, max_test=8, epochs=2, checkpoint=True,
                      results_dir=str(tmp_path / "r"))
    real = train_mod.method_weights

    def failing(method, epoch, *a, **k):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(method, epoch, *a, **k)

    monkeypatch.setattr(train_mod, "method_weights", failing)
    with pytest.raises(KeyboardInterrupt):
        run(cfg)
    ck = torch.load(checkpoint_dir(cfg) / "last.pt", weights_only=True)  # no pickled NumPy or code objects
    assert set(ck["rng"]) >= {"python", "numpy", "torch"}


# ------------------------------------------------------------------ 4. damaged files are recomputed


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_damaged_result_json_is_recomputed(tiny, tmp_path, capsys):
    cfg = tiny.config(method="wo_kd", max_train=24, max_valid=8, max_test=8, results_dir=str(tmp_path / "r"))
    first = run(cfg)
    _truncate(result_path(cfg))
    assert load_result(cfg) is None
    assert f"{result_path(cfg)} is damaged" in capsys.readouterr().err
    again = run(cfg)
    assert again["best_test"] == first["best_test"] and load_result(cfg)["best_test"] == first["best_test"]


@pytest.mark.parametrize("name", ["teacher.json", "teacher.safetensors"])
def test_damaged_teacher_file_is_retrained(tiny, tmp_path, capsys, name):
    cfg = tiny.config(method="vanilla_kd", max_train=24, max_valid=8, max_test=8, results_dir=str(tmp_path / "r"))
    first = train_mod.train_teacher(cfg)
    _truncate(teacher_dir(cfg) / name)
    capsys.readouterr()
    again = train_mod.train_teacher(cfg)
    assert f"{teacher_dir(cfg) / name} is damaged" in capsys.readouterr().err
    assert again["best_valid"] == first["best_valid"]
    assert train_mod.teacher_finished(cfg)


def test_finished_teacher_cache_is_read_while_another_process_holds_its_lock(tiny, tmp_path):
    """The runs of a sweep read one finished cache at once: reading takes no lock (a holder of the
    lock, e.g. a process computing another part, does not make readers wait); computing does."""
    import threading

    from paperlib.locks import hold_lock
    from paperlib.loraild import teacher_cache as tc

    cfg = tiny.config(method="vanilla_kd", max_train=24, max_valid=8, max_test=8, results_dir=str(tmp_path / "r"))
    run(cfg)
    folder = next(teacher_dir(cfg).rglob("cache-*"))
    tc.clear_memory()
    got: dict = {}

    def read(parts):
        try:
            got[parts] = tc.load_or_compute(folder, None, None, parts, True, "cpu")
        except Exception as err:  # noqa: BLE001 - computing without a teacher fails, after the lock
            got[parts] = err

    with hold_lock(folder):  # held by "another process" (another open file: flock refuses this one too)
        reader = threading.Thread(target=read, args=(("logits",),), daemon=True)
        reader.start()
        reader.join(timeout=30)
        assert not reader.is_alive() and got[("logits",)].has("logits")
        missing = threading.Thread(target=read, args=(("logits", "pooled"),), daemon=True)
        missing.start()  # "pooled" is not cached: computing it waits for the lock
        missing.join(timeout=2)
        assert missing.is_alive()
    missing.join(timeout=30)  # then fails without a teacher; what matters is that it waited
    assert isinstance(got[("logits", "pooled")], Exception)
    tc.clear_memory()


def test_damaged_teacher_cache_part_is_recomputed(tiny, tmp_path, capsys):
    from paperlib.loraild import teacher_cache as tc

    cfg = tiny.config(method="vanilla_kd", max_train=24, max_valid=8, max_test=8, results_dir=str(tmp_path / "r"))
    first = run(cfg)
    part = next(teacher_dir(cfg).rglob("cache-*/logits.safetensors"))
    _truncate(part)
    tc.clear_memory()
    shutil.rmtree(result_path(cfg).parent)
    again = run(cfg)
    assert f"{part} is damaged" in capsys.readouterr().err
    assert again["best_test"] == first["best_test"]


def test_damaged_checkpoint_restarts_the_run(tiny, tmp_path, capsys):
    cfg = tiny.config(method="wo_kd", max_train=24, max_valid=8, max_test=8, epochs=2, checkpoint=True,
                      results_dir=str(tmp_path / "r"))
    last = checkpoint_dir(cfg) / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"PK\x03\x04 truncated")
    result = run(cfg)
    assert f"{last} is damaged" in capsys.readouterr().err and len(result["history"]) == 2


# ------------------------------------------------------------------ 5. one owner per run


def test_a_run_holds_its_lock_while_it_trains(tiny, tmp_path, monkeypatch):
    cfg = tiny.config(method="wo_kd", max_train=24, max_valid=8, max_test=8, results_dir=str(tmp_path / "r"))
    seen = []
    real = train_mod.build_run_model

    def spy(c, *a, **k):
        seen.append(is_locked(result_path(c)))
        return real(c, *a, **k)

    monkeypatch.setattr(train_mod, "build_run_model", spy)
    run(cfg)
    assert seen == [True] and not is_locked(result_path(cfg))


# ------------------------------------------------------------------ 6. work lost after it is done


def test_unwritable_results_folder_fails_before_training(tiny, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("x")  # a file where the results folder should be (unwritable even for root)

    def forbidden(*a, **k):
        raise AssertionError("training started before the results folder was checked")

    monkeypatch.setattr(train_mod, "prepare_data", forbidden)
    err = one_line_error(capsys, cli_args(tiny, blocker / "results"))
    assert "results folder" in err and "not writable" in err and "--results-dir" in err


def test_cli_honours_paperlib_results(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PAPERLIB_RESULTS", str(tmp_path / "env_results"))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(cli_args(tiny, None)) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["result"].startswith(str(tmp_path / "env_results"))
    assert not (tmp_path / "results").exists()


# ------------------------------------------------------------------ 8. bad inputs, one line each


@pytest.mark.parametrize("option, value, expected", [
    ("--rank", "0", "rank must be an integer >= 1"),
    ("--rank", "-2", "rank must be an integer >= 1"),
    ("--lr", "-0.001", "lr must be a number >= 0"),
    ("--epochs", "0", "epochs must be an integer >= 1"),
    ("--max-train", "0", "max_train must be an integer >= 1"),
    ("--batch-size", "0", "batch_size must be an integer >= 1"),
    ("--seed", "-1", "seed must be a non-negative integer"),
    ("--max-length", "0", "max_length must be an integer >= 4"),
    ("--max-length", "500", "max_length 500 exceeds the 79 token positions of the teacher"),
    ("--device", "tpu9", "unknown device 'tpu9'"),
    ("--lora-kernel", "cuda", "lora_kernel must be one of ('auto', 'torch', 'triton')"),
])
def test_bad_settings_are_one_line_errors(tiny, tmp_path, capsys, option, value, expected):
    argv = cli_args(tiny, tmp_path / "r")
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]
    assert expected in one_line_error(capsys, argv)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_machine_is_refused_not_run_on_the_cpu(tiny, tmp_path, capsys):
    argv = cli_args(tiny, tmp_path / "r")
    argv[argv.index("--device") + 1] = "cuda"
    err = one_line_error(capsys, argv)
    assert "no CUDA GPU is visible here" in err
    assert not list((tmp_path / "r").rglob("*.json"))


def test_folder_that_is_not_a_model(tiny, tmp_path, capsys):
    folder = tmp_path / "empty_model"
    folder.mkdir()
    (folder / "readme.md").write_text("weights to come")
    err = one_line_error(capsys, cli_args(tiny, tmp_path / "r", "--student", str(folder)))
    assert f"{folder} is a folder but not a model" in err


def test_keys_unchanged_by_a_touch_without_new_content(tiny, tmp_path):
    """The cheap check (size, mtime) only decides whether to hash again: the key is the content."""
    glue = tmp_path / "glue"
    shutil.copytree(tiny.glue, glue)
    cfg = tiny.config(glue_dir=str(glue))
    before = experiment_dir(cfg)
    os.utime(glue / "SST-2" / "train.tsv", (1, 1))
    assert experiment_dir(cfg) == before


def test_two_identical_runs_at_once_train_once(tiny, tmp_path):
    """Two processes asked for the same run (two sweeps on one folder): one trains, the other
    waits for it and reads its result; checkpoints never share a temporary file."""
    import subprocess
    import sys

    cfg = tiny.config(method="vanilla_kd", max_train=24, max_valid=8, max_test=8, epochs=2, checkpoint=True,
                      results_dir=str(tmp_path / "r"))
    script = tmp_path / "one_run.py"
    script.write_text(
        "import json, sys, torch\n"
        "torch.set_num_threads(1)\n"
        "import paperlib.loraild.train as t\n"
        "from paperlib.loraild.config import RunConfig\n"
        "real = t.build_run_model\n"
        "def spy(*a, **k):\n"
        "    print('trained', flush=True)\n"
        "    return real(*a, **k)\n"
        "t.build_run_model = spy\n"
        "r = t.run(RunConfig(**json.loads(sys.argv[1])))\n"
        "print('best_test', r['best_test'], flush=True)\n")
    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(root))
    settings = json.dumps({k: v for k, v in cfg.to_dict().items() if k != "profile"})
    procs = [subprocess.Popen([sys.executable, str(script), settings], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum(o.count("trained") for o in outs) == 1, outs
    scores = {line for o in outs for line in o.splitlines() if line.startswith("best_test")}
    assert len(scores) == 1
    assert not list(Path(cfg.results_dir).rglob("*.tmp"))
