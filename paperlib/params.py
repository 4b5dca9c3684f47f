"""A chapter's papermill parameters: parsed, checked against the parameters cell, stopped on errors.

``papermill -p NAME VALUE`` injects a cell (``# Parameters`` and one assignment per ``-p``) after
the cell tagged ``parameters``.  Papermill passes a list as the *string* ``"[0, 1, 2]"``, warns
about (but injects) a name the chapter does not have, and checks no types.  One line at the top of
each chapter's first code cell::

    check_parameters(globals())

reads the parameters cell and the injected cell from IPython's input history (``In``), and

- stops on a name that is not a parameter of the chapter, suggesting the closest one;
- parses list parameters given as strings, ``"[0, 1, 2]"`` or ``"0,1,2"`` (or ``wo_kd`` for a list
  of names), and refuses a bare number where a list is expected (``-p seeds 3``: three seeds or
  seed 3?);
- checks every value against its default's type (``None`` defaults accept any value; the
  chapter's configuration checks those) and the names of tasks and methods;

writing parsed values back into the namespace.  Each problem is one line naming the parameter and
the fix.  (``papermill -y 'seeds: [0, 1, 2]'`` passes real lists and also works.)
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import MutableMapping
from typing import Any

INJECTED_HEADER = "# Parameters"


class ParameterError(ValueError):
    """A papermill parameter the chapter does not have, or a value of the wrong kind."""


def _assignments(source: str) -> dict[str, ast.expr] | None:
    """``name -> value expression`` if every statement of ``source`` is ``name = ...``, else None."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    out: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            out[node.target.id] = node.value
        else:
            return None
    return out


def cells_from_history(history: list[str]) -> tuple[str | None, str | None]:
    """(parameters cell, injected cell) among the cells run before the current one (last in ``history``)."""
    injected = None
    for source in reversed(history[:-1]):
        if not source.strip():
            continue
        if source.lstrip().startswith(INJECTED_HEADER) and injected is None:
            injected = source
            continue
        found = _assignments(source)
        if found:
            return source, injected
        break
    return None, injected


def _defaults(source: str) -> dict[str, Any]:
    out = {}
    for name, expr in (_assignments(source) or {}).items():
        try:
            out[name] = ast.literal_eval(expr)
        except ValueError:
            out[name] = ...  # not a literal: its type is not checked
    return out


def _parse_list(name: str, value: Any, default: list) -> list:
    """A list parameter from a list, a string ``"[0, 1]"`` / ``"0,1"`` / ``"wo_kd"``; scalars refused."""
    example = "[0, 1, 2]" if all(isinstance(d, int) for d in default) else "[" + ", ".join(map(repr, default[:2])) + "]"
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith(("[", "(")):
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError):  # [wo_kd, vanilla_kd]: names without quotes
                parsed = [part.strip().strip("'\"") for part in text.strip("[]()").split(",") if part.strip()]
            items = list(parsed) if isinstance(parsed, (list, tuple)) else [parsed]
        else:
            items = [part.strip() for part in text.split(",") if part.strip()]
    else:
        raise ParameterError(
            f"parameter {name} is a list such as {example}, got {value!r} ({type(value).__name__}); "
            f"write -p {name} \"[{value!r}]\" for that single value, or list several")
    if default and all(isinstance(d, int) and not isinstance(d, bool) for d in default):
        converted = []
        for item in items:
            if isinstance(item, str) and item.lstrip("-").isdigit():
                item = int(item)
            if not isinstance(item, int) or isinstance(item, bool):
                raise ParameterError(f"parameter {name} holds integers, got {item!r} in {value!r}")
            converted.append(item)
        items = converted
    elif default and all(isinstance(d, str) for d in default):
        bad = [i for i in items if not isinstance(i, str)]
        if bad:
            raise ParameterError(f"parameter {name} holds names, got {bad[0]!r} in {value!r}")
    if not items:
        raise ParameterError(f"parameter {name} is empty; give at least one value, e.g. {example}")
    return items


def _check_scalar(name: str, value: Any, default: Any) -> Any:
    if default is None or default is ... or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ParameterError(f"parameter {name} is True or False, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParameterError(f"parameter {name} is an integer (default {default!r}), got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParameterError(f"parameter {name} is a number (default {default!r}), got {value!r}")
    elif isinstance(default, str) and not isinstance(value, str):
        raise ParameterError(f"parameter {name} is text (default {default!r}), got {value!r}")
    return value


def _check_names(params: dict[str, Any]) -> None:
    """Tasks and methods by name, seeds non-negative (the rest is checked by the chapter's config)."""
    if "methods" in params or "task" in params:
        from paperlib.loraild.config import ALL_TASKS, METHOD_NAMES

        for m in params.get("methods") or []:
            if m not in METHOD_NAMES:
                close = difflib.get_close_matches(str(m), METHOD_NAMES, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ParameterError(f"parameter methods: unknown method {m!r}{hint}; valid: {', '.join(METHOD_NAMES)}")
        task = params.get("task")
        if isinstance(task, str) and task not in ALL_TASKS:
            raise ParameterError(f"parameter task: unknown task {task!r}; valid: {', '.join(ALL_TASKS)}")
    for name in ("seeds", "seed"):
        v = params.get(name)
        for s in v if isinstance(v, list) else [v]:
            if isinstance(s, int) and s < 0:
                raise ParameterError(f"parameter {name}: seeds are non-negative integers, got {s}")


def check_parameters(namespace: MutableMapping[str, Any], history: list[str] | None = None) -> dict[str, Any]:
    """Parse and check the chapter's parameters in ``namespace`` (a notebook's ``globals()``).

    ``history`` is the list of cell sources run so far, the current one last (default:
    ``namespace["In"]``, IPython's input history).  Returns the parameters as checked; parsed
    values are written back into ``namespace``.  Outside IPython (no history) nothing is checked.
    """
    history = history if history is not None else namespace.get("In")
    if not history:
        return {}
    params_src, injected_src = cells_from_history(list(history))
    if params_src is None:
        return {}
    defaults = _defaults(params_src)
    if injected_src is not None:
        for name in _assignments(injected_src.replace(INJECTED_HEADER, "", 1)) or {}:
            if name not in defaults:
                close = difflib.get_close_matches(name, list(defaults), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ParameterError(f"unknown parameter {name!r}{hint} (this chapter's parameters: "
                                     f"{', '.join(defaults)})")
    checked: dict[str, Any] = {}
    for name, default in defaults.items():
        if name not in namespace:
            continue
        value = namespace[name]
        if isinstance(default, list):
            value = _parse_list(name, value, default)
        else:
            value = _check_scalar(name, value, default)
        checked[name] = namespace[name] = value
    _check_names(checked)
    return checked


__all__ = ["check_parameters", "ParameterError", "cells_from_history"]
