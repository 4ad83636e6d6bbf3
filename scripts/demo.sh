#!/usr/bin/env bash
# The demo command: set up .venv on first use (idempotent), then run `vltseg-ros demo`: the live
# ROS pipeline (perception node + synthetic domain-shift camera + live table) on the demo model,
# which `vltseg demo` trains first if runs/demo/model_final.pt is absent.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "${VLTSEG_VENV:-$ROOT/.venv}/bin/vltseg-ros" demo "$@"
