#!/usr/bin/env bash
# The test command (README "Quick start"): installs what the tests need, then runs the whole
# workspace's tests once, with the flex (CPU) and wgpu (here: Mesa lavapipe) backends compiled
# into the same binaries, so every backend test runs on both from a single build.
# Extra arguments go to the test runner, e.g. `scripts/test.sh -p em-core`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# wgpu/Vulkan warn without a runtime dir; a private temporary one is enough.
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  XDG_RUNTIME_DIR="$(mktemp -d)"
  export XDG_RUNTIME_DIR
fi
# CubeCL's persistent autotune cache is one database shared by every test process; nextest runs
# them concurrently and a read raced a writer there ("reader slot released by non-owner"), so each
# process tunes for itself.
export CUBECL_AUTOTUNE_CACHE="${CUBECL_AUTOTUNE_CACHE:-0}"
# Cargo reuses a workspace member's build after the checkout moves (its hash ignores the
# workspace's location), but tests and em-grade embed their source path (CARGO_MANIFEST_DIR) to
# find data files: a shared CARGO_TARGET_DIR used from two clones ran one clone's tests against
# the other's (deleted) data. Our own crates are rebuilt when the checkout's path changes; burn
# and the other dependencies stay cached.
target_dir="${CARGO_TARGET_DIR:-target}"
marker="$target_dir/em-workspace-path"
if [ -e "$marker" ] && [ "$(cat "$marker")" != "$PWD" ]; then
  echo "test: checkout moved from $(cat "$marker") to $PWD; rebuilding the workspace's own crates"
  cargo clean -q -p em-core -p em-grade -p em-models -p em-infer -p em-train -p em-eval \
    -p em-examples -p em-benches
fi
mkdir -p "$target_dir"
echo "$PWD" > "$marker"
features=(--workspace --features wgpu)
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run "${features[@]}" --no-fail-fast "$@"
else
  echo "test: cargo-nextest not found, using cargo test (install: cargo install cargo-nextest --locked)"
  cargo test "${features[@]}" --no-fail-fast --lib --bins --tests "$@"
fi
# nextest does not run doc tests; they share the build above.
cargo test "${features[@]}" --doc "$@"
