#!/usr/bin/env bash
# Builds and runs kiln's examples once, with small arguments, so they cannot
# rot. This is the workspace's one release build of Cranelift; the backend's
# tests run in the dev profile under `cargo test --workspace`.
set -euo pipefail
cd "$(dirname "$0")/.."
# game_loop and job_system need the job systems and the plotting stack,
# which the README's first command (fib) does not build.
run() { cargo run --quiet --release -p kiln-examples --features host,plot --example "$@"; }

cargo build --release -p kiln-examples --features host,plot --examples

echo "--- fib (n=15, 50 runs, 1 timed run per row)"
run fib -- 15 50 1

echo "--- osr (5,000,000 iterations)"
osr=$(run osr -- 5000000)
echo "$osr"
grep -q "OSR: left the interpreter" <<<"$osr" || { echo "the loop never entered compiled code through OSR" >&2; exit 1; }

echo "--- code_memory (1,000 cycles; fails if resident memory grows)"
run code_memory -- 1000

echo "--- game_loop (200 frames unpaced, 2,400 entities; fails if the modes disagree)"
game=$(run game_loop -- 200 2400 --unpaced --out "${CARGO_TARGET_DIR:-target}/game_loop.png")
echo "$game"
grep -q "in every mode" <<<"$game" || { echo "game_loop did not finish" >&2; exit 1; }

echo "--- job_system (rayon and bevy_tasks adapters; fails on a wrong result or a stop that times out)"
run job_system -- 1000
