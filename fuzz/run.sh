#!/usr/bin/env bash
# Build the fuzz targets with libFuzzer and SanitizerCoverage on stable Rust, and run each one
# for a fixed time over its committed seeds (fuzz/seeds/<target>/, copied into a scratch
# corpus under fuzz/corpus/, git-ignored). Prints executions, corpus size and findings per
# target; exits non-zero on any crash, timeout (one input over 2 s) or out-of-memory.
# Crashing inputs land in fuzz/artifacts/<target>/ (git-ignored).
#
#   fuzz/run.sh [--seconds N] [target...]               targets: normalize jsonrpc jwks token decision
#   fuzz/run.sh --seconds 3600                           the long run (an hour per target)
#   fuzz/run.sh --reproduce TARGET FILE                  run one input (a finding) again
set -euo pipefail
cd "$(dirname "$0")"
fuzz=$PWD
all=(normalize jsonrpc jwks token decision)
seconds=20
reproduce=()
targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --reproduce) reproduce=("$2" "$3"); shift 3 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [ -f "fuzz_targets/$t.rs" ] || { echo "no such target: $t (have: ${all[*]})" >&2; exit 2; }
done

# cargo fuzz's `build -s none`: libFuzzer from libfuzzer-sys (built with the system C++
# compiler), coverage from LLVM's SanitizerCoverage passes, which stable rustc runs on request.
# The explicit --target keeps these flags off build scripts and proc macros.
host=$(rustc -vV | sed -n 's/^host: //p')
target_dir=${CARGO_TARGET_DIR:-$fuzz/../target}/fuzz
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
echo "==> building fuzz targets (release, instrumented) into $target_dir"
cargo build --release --locked --manifest-path Cargo.toml --target "$host" \
  --target-dir "$target_dir" --bins
bin=$target_dir/$host/release

if [ ${#reproduce[@]} -gt 0 ]; then
  export TMPDIR=$(mktemp -d)
  trap 'rm -rf "$TMPDIR"' EXIT
  "$bin/${reproduce[0]}" -timeout=2 -rss_limit_mb=2048 "${reproduce[1]}"
  exit
fi

# The harness writes its JWKS file under TMPDIR: keep it in a scratch directory of our own.
export TMPDIR=$fuzz/corpus/.tmp
mkdir -p "$TMPDIR"
trap 'rm -rf "$TMPDIR"' EXIT
failed=0
summary=()
for t in "${targets[@]}"; do
  corpus=$fuzz/corpus/$t
  artifacts=$fuzz/artifacts/$t
  log=$fuzz/artifacts/$t.log
  mkdir -p "$corpus" "$artifacts"
  cp -f seeds/"$t"/* "$corpus"/
  echo "==> $t: ${seconds}s over $(ls "$corpus" | wc -l) inputs"
  set +e
  "$bin/$t" "$corpus" -max_total_time="$seconds" -timeout=2 -rss_limit_mb=2048 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | awk '{s += $1} END {print s + 0}')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)
  found=$(find "$artifacts" -type f | wc -l)
  size=$(ls "$corpus" | wc -l)
  line=$(printf '%-10s executions %10s  corpus %5s  coverage %6s  findings %s' \
    "$t" "$execs" "$size" "${cov:-?}" "$found")
  summary+=("$line")
  if [ "$rc" -ne 0 ] || [ "$found" -ne 0 ]; then
    failed=1
    echo "FINDING in $t (libFuzzer exit $rc); log $log, inputs in $artifacts:" >&2
    grep -E -m 20 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" >&2 || tail -20 "$log" >&2
  fi
done
echo
echo "==> fuzzing summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
