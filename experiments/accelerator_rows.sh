#!/usr/bin/env bash
# The issue's accelerator rows: S/32, B/32, B/16 and L/16 in bfloat16, train
# and inference. B/16 runs three times: with the CPU's kernel gradient forms
# off (the model's default off the CPU: B/16's row), then with the
# per-example token-mixing gradient on, then with the transposed
# channel-mixing gradient on: the comparisons that decide those defaults.
#
#   bash experiments/accelerator_rows.sh [OUT_DIR [RUN ...]]
#
# RUN: any of s32 b32 b16 b16_token_grad_on b16_channel_grad_on l16 (default:
# all, in that order), to split the rows over several shorter jobs. Writes one
# JSON per run and a log of the printed tables to OUT_DIR (default:
# accelerator_rows/); copy the rows into experiments/README.md with the machine
# and date. $PYTHON (default python3) runs them.
#
# Needs jax with the accelerator's plugin (e.g. pip install -e . "jax[cuda12]"),
# flax, optax, orbax-checkpoint and ml_collections; not TensorFlow, which only
# the input mode needs, and not an install of mixer_jax: the benchmark runs
# from the repository root. On a machine without a network that has the rest
# (as this workplace's GPU machines), carry ml_collections' wheel
# (`pip download --no-deps ml_collections -d .whl`, .whl/ ignored by git) and
# start there with
#   pip install -q --no-deps --target /tmp/site .whl/*.whl &&
#   PYTHONPATH=/tmp/site bash experiments/accelerator_rows.sh "$OUT" s32 b32
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-accelerator_rows}"
runs=("${@:2}")
[[ ${#runs[@]} -gt 0 ]] ||
  runs=(s32 b32 b16 b16_token_grad_on b16_channel_grad_on l16)
py="${PYTHON:-python3}"

args_of() {  # RUN: the benchmark flags of one row.
  case "$1" in
    s32) echo --variant S/32 --batch 256 ;;
    b32) echo --variant B/32 --batch 256 ;;
    b16) echo --variant B/16 --batch 256 --noper_example_token_grad \
           --notransposed_channel_grad ;;
    b16_token_grad_on) echo --variant B/16 --batch 256 \
           --per_example_token_grad --notransposed_channel_grad ;;
    b16_channel_grad_on) echo --variant B/16 --batch 256 \
           --noper_example_token_grad --transposed_channel_grad ;;
    l16) echo --variant L/16 --batch 128 ;;
    *) echo "unknown run '$1'" >&2; return 1 ;;
  esac
}

for run in "${runs[@]}"; do args_of "$run" >/dev/null; done  # Fail early.
mkdir -p "$out"
"$py" -c 'import jax, flax, optax, ml_collections, orbax.checkpoint
print("jax", jax.__version__, "flax", flax.__version__, jax.devices())' |
  tee -a "$out/log.txt"
for run in "${runs[@]}"; do
  # shellcheck disable=SC2046  # The flags split on purpose.
  "$py" experiments/benchmark.py --dtype bfloat16 --modes train,inference \
      --json "$out/$run.json" $(args_of "$run") 2>&1 |
    grep -v '^[IW][0-9]' | tee -a "$out/log.txt"
done
