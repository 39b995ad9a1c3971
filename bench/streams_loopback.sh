#!/usr/bin/env bash
# The stream controller where more streams only cost: local peers on
# loopback, eccl-bench with the adaptive default and with fixed stream counts,
# alternated round by round in one run so that noise hits all of them.
# Prints per setting the median busbw and the stream count rank 0's link used.
#
#   bench/streams_loopback.sh [--peers 4] [--size 64M] [--iters 5] [--rounds 3]
#                             [--streams "default 4"]
# Binaries from ${BUILD:-build}.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
peers=4 size=64M iters=5 rounds=3 settings="default 4"
while (($#)); do
  case $1 in
    --peers) peers=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --streams) settings=$2; shift 2 ;;
    *) sed -n '2,8p' "$0"; exit 2 ;;
  esac
done
source bench/lab_common.sh
declare -A bw used
for r in $(seq 1 "$rounds"); do
  for s in $settings; do
    opt=()
    [ "$s" != default ] && opt=(--streams "$s")
    read -r b n < <("$build/tools/eccl-bench" allreduce --peers "$peers" -b "$size" -e "$size" \
      --iters "$iters" --warmup 2 --json "${opt[@]}" | python3 -c 'import json,sys
r=json.loads(sys.stdin.read().strip().splitlines()[-1])["rows"][0]
print(r["busbw_gbps"], r["streams"])')
    bw[$s]+="$b "
    used[$s]=$n
    echo "round $r: streams $s -> busbw $b GB/s ($n streams)"
  done
done
echo
printf '%-9s %6s %12s\n' streams used busbw_GB/s
for s in $settings; do
  printf '%-9s %6s %12.3f\n' "$s" "${used[$s]}" "$(echo "${bw[$s]}" | median)"
done
