#!/usr/bin/env bash
# The issue's accelerator rows in one go: S/32, B/32, B/16 and L/16 in
# bfloat16, train and inference. B/16 runs three times: with the CPU's kernel
# gradient forms off (the model's default off the CPU: B/16's row), then with
# the per-example token-mixing gradient on, then with the transposed
# channel-mixing gradient on: the comparisons that decide those defaults.
#
#   bash experiments/accelerator_rows.sh [OUT_DIR]
#
# Needs a jax with the accelerator's plugin, e.g. pip install -e . "jax[cuda12]".
# Writes one JSON per run and a log of the printed tables to OUT_DIR (default:
# accelerator_rows/); copy the rows into README.md with the machine and date.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-accelerator_rows}"
mkdir -p "$out"
bench() {  # NAME ARGS...: one benchmark run, its table appended to the log.
  local name="$1"; shift
  python experiments/benchmark.py --dtype bfloat16 --modes train,inference \
      --json "$out/$name.json" "$@" 2>&1 | grep -v '^[IW][0-9]' | tee -a "$out/log.txt"
}
python -c 'import jax; print(jax.devices())' | tee "$out/log.txt"
bench s32 --variant S/32 --batch 256
bench b32 --variant B/32 --batch 256
bench b16 --variant B/16 --batch 256 --noper_example_token_grad \
    --notransposed_channel_grad
bench b16_token_grad_on --variant B/16 --batch 256 --per_example_token_grad \
    --notransposed_channel_grad
bench b16_channel_grad_on --variant B/16 --batch 256 \
    --noper_example_token_grad --transposed_channel_grad
bench l16 --variant L/16 --batch 128
