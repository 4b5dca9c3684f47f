"""Issue 12, case 7: papermill parameters parsed from strings, checked, unknown names stopped."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from paperlib.params import ParameterError, check_parameters

ROOT = Path(__file__).resolve().parents[1]
PARAMS_CELL = '''task = "rotten_tomatoes"  # embedded
methods = ["wo_kd", "vanilla_kd"]
seeds = [0, 1, 2, 3]  # the paper: 5 runs
epochs = None
max_train = None
seq_len = 128
ridge = 0.0
'''


def check(injected: dict[str, str]):
    """Run check_parameters as papermill leaves a kernel: parameters cell, injected cell, this cell."""
    namespace: dict = {}
    exec(PARAMS_CELL, namespace)
    lines = [f"{k} = {v}" for k, v in injected.items()]
    exec("\n".join(lines), namespace)
    history = ["", PARAMS_CELL, "# Parameters\n" + "\n".join(lines) + "\n", "check_parameters(globals())"]
    checked = check_parameters(namespace, history)
    return checked, namespace


@pytest.mark.parametrize("given, expected", [
    ({"seeds": '"[0, 1, 2, 3, 4]"'}, [0, 1, 2, 3, 4]),  # the README's own -p seeds "[0, 1, 2, 3, 4]"
    ({"seeds": '"0,1,2"'}, [0, 1, 2]),
    ({"seeds": "[5, 6]"}, [5, 6]),  # papermill -y gives a real list
])
def test_list_parameters_given_as_strings(given, expected):
    checked, ns = check(given)
    assert checked["seeds"] == expected and ns["seeds"] == expected


@pytest.mark.parametrize("given", ['"wo_kd"', '"wo_kd, vanilla_kd"', '"[wo_kd, vanilla_kd]"'])
def test_method_names_given_as_a_string(given):
    checked, _ = check({"methods": given})
    assert checked["methods"][0] == "wo_kd" and all(isinstance(m, str) for m in checked["methods"])


@pytest.mark.parametrize("given, expected", [
    ({"seeds": "3"}, r"parameter seeds is a list such as \[0, 1, 2\], got 3 \(int\); write -p seeds \"\[3\]\""),
    ({"seeds": '"[0, x]"'}, r"parameter seeds holds integers, got 'x'"),
    ({"seeds": '"[-1]"'}, r"seeds are non-negative integers, got -1"),
    ({"methods": '"wo_kdd"'}, r"unknown method 'wo_kdd' \(did you mean 'wo_kd'\?\)"),
    ({"task": '"rtee"'}, r"parameter task: unknown task 'rtee'"),
    ({"max_trian": "16"}, r"unknown parameter 'max_trian'; did you mean 'max_train'\?"),
    ({"seq_len": '"long"'}, r"parameter seq_len is an integer \(default 128\), got 'long'"),
    ({"ridge": '"none"'}, r"parameter ridge is a number"),
    ({"task": "3"}, r"parameter task is text"),
])
def test_bad_parameters_stop_with_one_line(given, expected):
    with pytest.raises(ParameterError, match=expected) as info:
        check(given)
    assert "\n" not in str(info.value)


def test_no_injection_and_no_ipython_check_nothing_or_defaults():
    assert check_parameters({"seeds": [0]}) == {}  # a plain script: nothing to compare with
    checked, _ = check({})
    assert checked["seeds"] == [0, 1, 2, 3] and checked["epochs"] is None


@pytest.mark.slow
def test_papermill_run_stops_on_a_misspelled_parameter_and_parses_lists(tmp_path):
    """The real thing: papermill injects the cell; the chapter's first line stops or parses."""
    import papermill as pm

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    params = nbformat.v4.new_code_cell(PARAMS_CELL)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# chapter"), params,
                nbformat.v4.new_code_cell("from paperlib.params import check_parameters\n"
                                          "check_parameters(globals())\nprint(repr(seeds), repr(methods))")]
    path = tmp_path / "chapter.ipynb"
    nbformat.write(nb, path)
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = f"{ROOT}:{env_path}" if env_path else str(ROOT)
    try:
        out = tmp_path / "out.ipynb"
        pm.execute_notebook(str(path), str(out), parameters={"seeds": "[0, 1, 2, 3, 4]", "methods": "wo_kd"},
                            kernel_name="python3", progress_bar=False)
        printed = nbformat.read(out, as_version=4).cells[-1].outputs[0]["text"]
        assert printed.strip() == "[0, 1, 2, 3, 4] ['wo_kd']"
        with pytest.raises(pm.PapermillExecutionError, match="unknown parameter 'max_trian'; did you mean 'max_train'"):
            pm.execute_notebook(str(path), str(out), parameters={"max_trian": 16}, kernel_name="python3",
                                progress_bar=False)
    finally:
        os.environ["PYTHONPATH"] = env_path
