#!/usr/bin/env bash
# Loom models, run under `--cfg loom`:
# - kiln-core (core/tests/loom.rs): every atomic and the broker's lock come
#   from loom (core/src/sync.rs): promotion, claim, publish, invalidate,
#   swap, quiesce / osr_entry, wake-up.
# - kiln-std's reclamation (std-broker/tests/loom.rs): src/reclaim.rs over a
#   loom-built kiln-core broker: two reclaimers racing with a registered
#   thread reporting between them, the unmanaged-to-managed mode switch, and
#   parked code across the switch. Each model also runs on a transcription
#   of the protocol kiln-std had before and must catch it.
# - kiln-std's burst wake-up (std-broker/tests/loom_sleepers.rs):
#   src/sleepers.rs, a worker going to sleep against a burst push, where a
#   lost wake-up is a deadlock; the same registry without its fences must
#   be caught.
# A preemption bound of 2 keeps the suite at a few minutes on two cores;
# raise LOOM_MAX_PREEMPTIONS for a deeper (much slower) search. Reproduce a
# failure with LOOM_CHECKPOINT_FILE / LOOM_LOG (see loom's docs).
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
cargo test -p kiln-core --release --test loom --target-dir target/loom "$@"
cargo test -p kiln-std --release --test loom --test loom_sleepers --target-dir target/loom "$@"
