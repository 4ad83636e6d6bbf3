#!/usr/bin/env bash
# The test command: set up .venv on first use (idempotent), then run the whole suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow" -x`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "${VLTSEG_VENV:-$ROOT/.venv}/bin/python" -m pytest "$@"
