#!/usr/bin/env bash
# Join time of shared state on the namespace lab: one receiver fetches SIZE of
# state from 1, 2 and 3 sources, alternated round by round in one run. Sources'
# links are capped at RATE each way, the receiver's at RECV_RATE (default 10x),
# so more sources can fill the receiver's link (needs root; torn down at exit).
#
#   bench/sync_lab.sh [--size 1G] [--rate 1gbit] [--recv-rate 10gbit] [--rounds 2] [--iters 2]
# Binaries from ${BUILD:-build}.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
size=1G rate=1gbit recvRate=10gbit rounds=2 iters=2
while (($#)); do
  case $1 in
    --size) size=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --recv-rate) recvRate=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    *) sed -n '2,8p' "$0"; exit 2 ;;
  esac
done
source bench/lab_common.sh
export ECCL_AUTH_TOKEN=${ECCL_AUTH_TOKEN:-sync-lab-bench}
work=$(mktemp -d)
master_pid=""
cleanup() {
  [ -n "$master_pid" ] && kill "$master_pid" 2>/dev/null || true
  scripts/lab/lab.sh down
  rm -rf "$work"
}
trap cleanup EXIT
# Host 4 receives; hosts 1..3 are the sources.
scripts/lab/lab.sh up 4 --rate "$rate" --host-rate 4 "$recvRate"

run() {  # sources -> prints the median time (ms) of the receiver's fetches
  local k=$1 n=$(($1 + 1))
  lab_master_start
  local pids=()
  for i in $(seq 1 "$k") 4; do
    local extra=()
    [ "$i" = 4 ] && extra=(--receiver)
    scripts/lab/lab.sh exec "$i" "$build/tools/eccl-bench" sync --master "198.18.0.1:$port" \
      --world "$n" -e "$size" --iters "$iters" "${extra[@]}" > "$work/out.$i" 2>&1 &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p"; done
  lab_master_stop
  cat "$work"/out.* | awk '/^ +[0-9]/ {print $3}' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
  rm -f "$work"/out.*
}

declare -A times
for r in $(seq 1 "$rounds"); do
  for k in 1 2 3; do
    t=$(run "$k")
    times[$k]+="$t "
    echo "round $r: $k source(s): $t ms"
  done
done
one=$(echo "${times[1]}" | median)
echo "# $size of shared state to one receiver; sources at $rate each way, receiver at $recvRate"
for k in 1 2 3; do
  t=$(echo "${times[$k]}" | median)
  python3 -c "import sys; t,o=float(sys.argv[1]),float(sys.argv[2]); print(f'{sys.argv[3]} source(s): {t:8.1f} ms  {o/t:4.2f}x faster than 1')" "$t" "$one" "$k"
done
