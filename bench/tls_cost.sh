#!/usr/bin/env bash
# What TLS costs an all-reduce: eccl-bench with ECCL_TLS=off and =psk (and
# =cert when given certificate files), alternated round by round in one run so
# that noise hits both; prints each mode's median busbw and its ratio to plain.
#
#   bench/tls_cost.sh [--lab HOSTS] [--peers N] [--size 64M] [--iters 5] [--rounds 3]
#
# Without --lab: N local peer processes on loopback (CPU-bound: every byte is
# encrypted and decrypted on the same two cores). With --lab H: H hosts of the
# namespace lab (scripts/lab/lab.sh, 1 Gbit/s each way per host, needs root),
# one peer per host, the master in the root namespace; the lab is torn down
# at exit. Binaries from ${BUILD:-build}.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
lab=0 peers=4 size=64M iters=5 rounds=3
while (($#)); do
  case $1 in
    --lab) lab=$2; shift 2 ;;
    --peers) peers=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) sed -n '2,13p' "$0"; exit 2 ;;
  esac
done
source bench/lab_common.sh
export ECCL_AUTH_TOKEN=${ECCL_AUTH_TOKEN:-tls-cost-bench}
work=$(mktemp -d)
cleanup() {
  [ -n "${master_pid:-}" ] && kill "$master_pid" 2>/dev/null || true
  [ "$lab" -gt 0 ] && scripts/lab/lab.sh down
  rm -rf "$work"
}
trap cleanup EXIT
[ "$lab" -gt 0 ] && scripts/lab/lab.sh up "$lab" --rate 1gbit

modes=(off psk)
[ -n "${ECCL_TLS_CERT:-}" ] && modes+=(cert)

busbw() {  # mode -> prints rank 0's busbw (GB/s)
  local mode=$1 out=$work/out
  if [ "$lab" -eq 0 ]; then
    ECCL_TLS=$mode "$build/tools/eccl-bench" allreduce --peers "$peers" -b "$size" -e "$size" \
      --iters "$iters" --warmup 2 --json > "$out"
  else
    lab_bench "$out" "$lab" ECCL_TLS="$mode" -- -b "$size" -e "$size" --iters "$iters" --warmup 2
  fi
  python3 -c 'import json,sys
for line in open(sys.argv[1]):
    line=line.strip()
    if line.startswith("{"): print(json.loads(line)["rows"][0]["busbw_gbps"])' "$out"
}

declare -A results
for r in $(seq 1 "$rounds"); do
  for m in "${modes[@]}"; do
    v=$(busbw "$m")
    results[$m]+="$v "
    echo "round $r: tls=$m busbw ${v} GB/s"
  done
done
plain=$(echo "${results[off]}" | median)
where=$([ "$lab" -gt 0 ] && echo "lab of $lab hosts, 1 Gbit/s each" || echo "loopback, $peers peers")
echo "# $size float32 all-reduce, $where, median of $rounds rounds"
for m in "${modes[@]}"; do
  v=$(echo "${results[$m]}" | median)
  python3 -c "import sys; v,p=float(sys.argv[1]),float(sys.argv[2]); print(f'tls={sys.argv[3]:5s} busbw {v:.3f} GB/s  {v/p*100:.0f}% of plain')" "$v" "$plain" "$m"
done
