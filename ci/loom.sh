#!/usr/bin/env bash
# kiln-core's loom models (core/tests/loom.rs): every atomic and the broker's
# lock come from loom under `--cfg loom` (core/src/sync.rs), which explores
# the interleavings of promotion, claim, publish, invalidate, swap, quiesce
# and wake-up. A preemption bound of 2 keeps the suite at a few minutes on two
# cores; raise LOOM_MAX_PREEMPTIONS for a deeper (much slower) search.
# Reproduce a failure with LOOM_CHECKPOINT_FILE / LOOM_LOG (see loom's docs).
set -euo pipefail
cd "$(dirname "$0")/.."

RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}" \
  cargo test -p kiln-core --release --test loom --target-dir target/loom "$@"
