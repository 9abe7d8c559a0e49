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
out="${CARGO_TARGET_DIR:-target}"
rm -f "$out/game_loop.profile"
game=$(run game_loop -- 200 2400 --unpaced --out "$out/game_loop.png" --trace "$out/game_loop.json" --profile "$out/game_loop.profile")
echo "$game"
grep -q "in every mode" <<<"$game" || { echo "game_loop did not finish" >&2; exit 1; }

echo "--- game_loop's trace parses as Chrome trace event JSON, with compile slices, frame slices and counters"
python3 - "$out/game_loop.json" <<'PY'
import json, sys
events = json.load(open(sys.argv[1]))["traceEvents"]
def has(ph, cat):
    return any(e["ph"] == ph and e.get("cat") == cat for e in events)
for ph, cat in [("X", "compile"), ("X", "frame"), ("i", "promote"), ("i", "quiesce")]:
    assert has(ph, cat), f"no {ph} event of category {cat}"
assert any(e["ph"] == "C" and e["name"] == "queue depth" for e in events), "no queue depth counter"
assert all("ts" in e for e in events if e["ph"] != "M"), "an event without a timestamp"
print(f"{len(events)} events")
PY

echo "--- game_loop again, warm-started from the first run's profile"
game=$(run game_loop -- 200 2400 --unpaced --out "$out/game_loop.png" --profile "$out/game_loop.profile")
echo "$game"
grep -q "scripts queued before the first frame" <<<"$game" || { echo "game_loop did not start warm" >&2; exit 1; }

echo "--- warm_start (24 functions)"
run warm_start -- 24

echo "--- job_system (rayon and bevy_tasks adapters; fails on a wrong result or a stop that times out)"
run job_system -- 1000
