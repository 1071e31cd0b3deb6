#!/usr/bin/env bash
# Install everything the tests need from the project's own files, then run the whole suite.
#   scripts/test.sh [PYTEST ARGS]     the full install (.venv, extras train,dev) and the whole suite: the
#                                     tests on $ESSM_TEST_WORKERS processes (pytest-xdist, default 2; most
#                                     of the suite is numba compiling kernels, one core each), then the
#                                     tests marked `serial` (real time, CPU load of their own) alone.
#                                     With PYTEST ARGS: exactly `pytest ARGS`, one process.
#   scripts/test.sh --runtime-only    a second venv (.venv-runtime) with `pip install -e .` only (what a
#                                     robot installs: no torch), plus pytest/hypothesis, running the
#                                     engine and program tests; it fails if torch is importable there
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1-}" = "--runtime-only" ]; then
  shift
  [ -x .venv-runtime/bin/python ] || python3 -m venv .venv-runtime
  .venv-runtime/bin/python -m pip install --quiet --upgrade pip
  .venv-runtime/bin/python -m pip install --quiet -e . "pytest>=8" "hypothesis>=6.100"
  if .venv-runtime/bin/python -c "import torch" 2>/dev/null; then
    echo "runtime-only venv can import torch: the runtime dependencies pull it in" >&2
    exit 1
  fi
  exec .venv-runtime/bin/python -m pytest -q -m "not slow" tests/test_engine.py tests/test_engine_layout.py \
    tests/test_engine_hardening.py tests/test_program.py tests/test_program_hardening.py \
    tests/test_program_fuzz.py tests/test_lru_stream.py tests/test_lds.py tests/test_lds_engine.py \
    tests/test_spotter_input.py "$@"
fi
bash scripts/setup.sh train,dev,sim
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest -q "$@"
fi
workers="${ESSM_TEST_WORKERS:-2}"
# --dist loadfile: a file's tests share one worker, so a kernel its tests compile is compiled once;
# the workers share the numba disk cache, so a kernel one worker saved loads in the other.
.venv/bin/python -m pytest -q -n "$workers" --dist loadfile -m "not serial"
exec .venv/bin/python -m pytest -q -m serial
