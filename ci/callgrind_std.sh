#!/usr/bin/env bash
# Deterministic instruction counts of kiln-std's paths, guarded against a
# record kept in the repository (ci/callgrind_std.record).
#
# Builds std-broker/examples/path_count.rs once (release) and runs it under
# callgrind once per loop, counting only that loop's function
# (--collect-atstart=no --toggle-collect). Per-call loops make 1,000,000
# calls with the same harness; their figure is instructions per call net of
# the harness loop (`backedge` also passes its site through the harness,
# one instruction more than the others). `register` is per bead (100,000 beads registered into a
# reserved vector) and `crossing` per threshold crossing (200 beads queued,
# no worker thread, so no wake-up), both whole; `pump` per job (those 200
# jobs run by one `Beadie::pump`: a worker's own work per promotion).
#
# Fails (exit 1) when a figure exceeds its record by more than 10 %, or a
# record is missing. Instruction counts are deterministic, so a failure is a
# heavier path, not noise. A change that makes a path cheaper (or knowingly
# heavier) updates the record in the same commit:
#   bash ci/callgrind_std.sh --update
#
# Uses target/ unless CARGO_TARGET_DIR is set.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly N=1000000
readonly REGISTER=100000
readonly CROSSINGS=200
readonly RECORD=ci/callgrind_std.record
readonly MAX_GROWTH_PERCENT=10
readonly LOOPS=(beadie bound tiered counting backedge blacklisted waiting osr_entry register crossing pump)

update=0
[[ "${1:-}" == "--update" ]] && update=1

if ! command -v valgrind >/dev/null 2>&1; then
  echo "callgrind_std.sh: valgrind not found (apt-get install valgrind)" >&2
  exit 1
fi

target_dir="${CARGO_TARGET_DIR:-target}"
cargo build --release --example path_count -p kiln-std
binary="$target_dir/release/examples/path_count"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# count LOOP: total Ir of kiln_count_LOOP (and its callees).
count() {
  local loop="$1" out="$scratch/$1.out"
  valgrind --tool=callgrind --collect-atstart=no --toggle-collect="*kiln_count_$loop*" \
    --callgrind-out-file="$out" "$binary" "$loop" >"$scratch/$loop.log" 2>&1 || {
    cat "$scratch/$loop.log" >&2
    echo "callgrind_std.sh: valgrind failed on loop '$loop'" >&2
    exit 1
  }
  local total
  total="$(awk '/^summary:/ { print $2 }' "$out")"
  if [[ -z "$total" || "$total" -eq 0 ]]; then
    echo "callgrind_std.sh: no count for loop '$loop'" >&2
    exit 1
  fi
  echo "$total"
}

harness="$(count harness)"
declare -A figure
for loop in "${LOOPS[@]}"; do
  total="$(count "$loop")"
  case "$loop" in
    register) figure[$loop]="$(awk -v t="$total" -v n="$REGISTER" 'BEGIN { printf "%.2f", t / n }')" ;;
    crossing | pump) figure[$loop]="$(awk -v t="$total" -v n="$CROSSINGS" 'BEGIN { printf "%.2f", t / n }')" ;;
    *) figure[$loop]="$(awk -v t="$total" -v h="$harness" -v n="$N" 'BEGIN { printf "%.2f", (t - h) / n }')" ;;
  esac
done

if [[ "$update" == 1 ]]; then
  {
    echo "# kiln-std's paths in instructions (callgrind, rustc $(rustc --version | cut -d' ' -f2), x86_64):"
    echo "# per call net of the harness; register per bead; crossing per crossing; pump per job."
    echo "# Written by 'bash ci/callgrind_std.sh --update'; ci/callgrind_std.sh fails above +$MAX_GROWTH_PERCENT %."
    for loop in "${LOOPS[@]}"; do
      echo "$loop ${figure[$loop]}"
    done
  } >"$RECORD"
  echo "callgrind_std.sh: record updated"
  cat "$RECORD"
  exit 0
fi

failed=0
printf '%-12s %10s %10s %8s\n' path measured record limit
for loop in "${LOOPS[@]}"; do
  record="$(awk -v l="$loop" '$1 == l { print $2 }' "$RECORD")"
  if [[ -z "$record" ]]; then
    echo "FAIL: no record for '$loop' in $RECORD (bash ci/callgrind_std.sh --update)"
    failed=1
    continue
  fi
  limit="$(awk -v r="$record" -v p="$MAX_GROWTH_PERCENT" 'BEGIN { printf "%.2f", r * (1 + p / 100) }')"
  verdict=ok
  if awk -v a="${figure[$loop]}" -v b="$limit" 'BEGIN { exit !(a > b) }'; then
    verdict=FAIL
    failed=1
  fi
  printf '%-12s %10s %10s %8s %s\n' "$loop" "${figure[$loop]}" "$record" "$limit" "$verdict"
done
exit "$failed"
