#!/usr/bin/env bash
# Prefill and decode speed of em against llama.cpp on this machine, back to back, on the same
# weights (Qwen2.5-Coder-0.5B-Instruct as scripts/qwen builds it), the same 128 prompt tokens,
# 128 greedy new tokens (EOS ignored), batch 1, threads = cores. Not part of CI.
#
#   scripts/bench-peers.sh [REPEATS, default 3]
#
# Installs what it needs under ~/.cache/em/bench (a venv with llama-cpp-python 0.3.36 built from
# its sdist for this CPU, ~15-25 min once on 2 cores; numpy, gguf, tokenizers), builds the
# checkpoint with scripts/qwen/reproduce.sh if missing, dequantizes the GGUF the checkpoint comes
# from to F32 and F16 with llama.cpp's own quantizer, builds em's `generate` example, then runs
# every engine REPEATS times in turn and prints one table: median tok/s, em's ratio to llama.cpp
# at the same width (of the medians, and the median and range of each round's prefill and
# decode ratios), how many greedy tokens em's runs share with llama.cpp's, and the load average
# before and after. Each engine runs the prompt once, untimed, before the timed run (`--warmup
# 1`: llama.cpp evaluates it, em generates one token from it), so that neither prefill pays its
# first forward's costs (llama.cpp faulting in its mapped GGUF, both engines' first allocations).
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-3}
MODELS=${EM_MODELS:-$HOME/.cache/em/models}
BENCH=$HOME/.cache/em/bench
THREADS=$(nproc)
export RAYON_NUM_THREADS=$THREADS
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/em/target}"

[ -d "$MODELS/qwen2.5-coder-0.5b-instruct-f32" ] || MODEL_ONLY=1 bash scripts/qwen/reproduce.sh "$MODELS"
mkdir -p "$BENCH"
if [ ! -x "$BENCH/venv/bin/python" ] || ! "$BENCH/venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
  python3 -m venv "$BENCH/venv"
  "$BENCH/venv/bin/pip" install -q numpy gguf tokenizers cmake ninja
  pip download -q --no-deps --no-binary llama-cpp-python -d "$BENCH/dl" "llama-cpp-python==0.3.36"
  PATH="$BENCH/venv/bin:$PATH" CMAKE_BUILD_PARALLEL_LEVEL=$THREADS \
    CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
    "$BENCH/venv/bin/pip" install "$BENCH/dl/llama_cpp_python-0.3.36.tar.gz"
fi
"$BENCH/venv/bin/python" -c "import tokenizers" 2>/dev/null || "$BENCH/venv/bin/pip" install -q tokenizers
PY="$BENCH/venv/bin/python"
for kind in f32 f16; do
  [ -f "$BENCH/qwen-$kind.gguf" ] || "$PY" scripts/bench_peers_llama.py quantize "$MODELS/gguf/qwen.gguf" "$BENCH/qwen-$kind.gguf" "$kind"
done

# The same 128 prompt ids for every engine (Qwen's tokenizer, checked against llama.cpp's by scripts/qwen).
"$PY" - "$MODELS/qwen2.5-coder-0.5b-instruct-f32/tokenizer.json" "$BENCH/prompt.json" <<'PYEOF'
import json, sys
from tokenizers import Tokenizer
text = ("Write a Python module that parses a CSV file of sales records, groups them by region and "
        "month, computes totals, averages and the best-selling product of each group, and prints a "
        "report. Explain every function, handle malformed lines, and add unit tests for each case. ") * 8
ids = Tokenizer.from_file(sys.argv[1]).encode(text, add_special_tokens=False).ids[:128]
assert len(ids) == 128
json.dump(ids, open(sys.argv[2], "w"))
PYEOF

cargo build -q --release -p em-examples --example generate
EM=$CARGO_TARGET_DIR/release/examples/generate
load_before=$(cut -d' ' -f1 /proc/loadavg)
results=$(mktemp)
for r in $(seq "$REPEATS"); do
  for engine in llama-f32 em-f32 llama-f16 em-f16 em-bf16; do
    case $engine in
      llama-*) line=$("$PY" scripts/bench_peers_llama.py run "$BENCH/qwen-${engine#llama-}.gguf" "$BENCH/prompt.json" --new 128 --threads "$THREADS" --warmup 1) ;;
      em-*) line=$("$EM" --model "$MODELS/qwen2.5-coder-0.5b-instruct-f32" --dtype "${engine#em-}" \
              --prompt-ids "$BENCH/prompt.json" --max-new-tokens 129 --ignore-eos --warmup 1 --json | tail -1) ;;
    esac
    echo "$engine $line" | tee -a "$results"
  done
done
load_after=$(cut -d' ' -f1 /proc/loadavg)
"$PY" - "$results" "$load_before" "$load_after" "$THREADS" <<'PYEOF'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    engine, data = line.split(" ", 1)
    rows.setdefault(engine, []).append(json.loads(data))
keys = ("prefill_tok_s", "decode_tok_s")
med = {e: {k: statistics.median(r[k] for r in rs) for k in keys} for e, rs in rows.items()}
base = {"em-f32": "llama-f32", "em-f16": "llama-f16", "em-bf16": "llama-f16"}
print(f"\n{len(next(iter(rows.values())))} runs each, median; 128 prompt tokens, 128 new tokens, "
      f"{sys.argv[4]} threads; load average {sys.argv[2]} before, {sys.argv[3]} after\n")
# Two ratios: of the medians, and the median of each round's ratio (the two engines seconds
# apart, so less exposed to the machine's bandwidth drifting between rounds), with its range.
print("| engine | prefill tok/s | decode tok/s | em / llama.cpp (prefill, decode) "
      "| per round: median (min-max) of prefill ratios | of decode ratios |")
print("|---|---|---|---|---|---|")
for e in ["llama-f32", "em-f32", "llama-f16", "em-f16", "em-bf16"]:
    if e not in med:
        continue
    m = med[e]
    ratio, per_round = "", ["", ""]
    if e in base and base[e] in med:
        b = med[base[e]]
        ratio = f"{m['prefill_tok_s'] / b['prefill_tok_s']:.2f}×, {m['decode_tok_s'] / b['decode_tok_s']:.2f}×"
        for i, k in enumerate(keys):
            r = [x[k] / y[k] for x, y in zip(rows[e], rows[base[e]])]
            per_round[i] = f"{statistics.median(r):.2f}× ({min(r):.2f}-{max(r):.2f})"
    print(f"| {e} | {m['prefill_tok_s']:.1f} | {m['decode_tok_s']:.1f} | {ratio} | {per_round[0]} | {per_round[1]} |")
# Whether the engines compute the same thing: the greedy tokens each em run shares with
# llama.cpp's run of the same round at the same width, from the first on (f16 and bf16 can part
# at a near tie: llama.cpp rounds the activations to f16, and bf16 weights are not F16's).
print()
for e, b in base.items():
    if e in rows and b in rows:
        same = []
        for x, y in zip(rows[e], rows[b]):
            n = 0
            for s, t in zip(x.get("tokens", []), y.get("tokens", [])):
                if s != t:
                    break
                n += 1
            same.append(n)
        print(f"{e}: greedy tokens identical to {b}'s for the first {min(same)}-{max(same)} "
              f"of {len(rows[e][0].get('tokens', []))}")
PYEOF
