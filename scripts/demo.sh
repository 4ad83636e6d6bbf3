#!/usr/bin/env bash
# The demo command: set up .venv on first use (idempotent), then run `vltseg demo`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "${VLTSEG_VENV:-$ROOT/.venv}/bin/vltseg" demo "$@"
