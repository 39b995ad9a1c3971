#!/usr/bin/env bash
# What a payload codec buys on a bandwidth-bound link: a float32 all-reduce
# with each codec and without one, alternated round by round in one run so
# that noise hits all of them, on the namespace lab (scripts/lab/lab.sh: H
# hosts, one peer each, RATE each way per host, the master in the root
# namespace; torn down at exit; needs root). Prints per codec the median time,
# the speed-up over no codec, the wire bytes per rank and op, the time the
# link rate alone would need for them, and the error on random normal data.
#
#   bench/codec_lab.sh [--hosts 3] [--rate 1gbit] [--size 64M] [--iters 3] [--rounds 3]
#                      [--codecs "none bf16 fp16 uint8 uint4"] [--rounding nearest]
# Binaries from ${BUILD:-build}.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
hosts=3 rate=1gbit size=64M iters=3 rounds=3 codecs="none bf16 fp16 uint8 uint4" rounding=nearest
while (($#)); do
  case $1 in
    --hosts) hosts=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --codecs) codecs=$2; shift 2 ;;
    --rounding) rounding=$2; shift 2 ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
  esac
done
source bench/lab_common.sh
lab_session codec-lab-bench
scripts/lab/lab.sh up "$hosts" --rate "$rate"

# One run -> "time_us wire_bytes max_abs_error rms_error" of rank 0's row.
run() {
  local q=$1 out=$work/out
  local codec=(--quant "$q")
  [ "$q" != none ] && codec+=(--rounding "$rounding")
  lab_bench "$out" "$hosts" -- -b "$size" -e "$size" --iters "$iters" --warmup 1 "${codec[@]}"
  python3 -c 'import json,sys
for line in open(sys.argv[1]):
    line=line.strip()
    if line.startswith("{"):
        r=json.loads(line)["rows"][0]
        print(r["time_us"], r["wire_bytes"], r.get("max_abs_error",0), r.get("rms_error",0))' "$out"
}

declare -A times rest
for r in $(seq 1 "$rounds"); do
  for q in $codecs; do
    read -r t wire maxerr rmserr < <(run "$q")
    times[$q]+="$t "
    rest[$q]="$wire $maxerr $rmserr"
    echo "round $r: $q ${t} us, $wire wire bytes"
  done
done
base=$(echo "${times[none]:-}" | median)
echo "# $size float32 all-reduce (sum), lab of $hosts hosts at $rate each way, rounding $rounding,"
echo "# median of $rounds rounds x $iters iterations; error vs the exact float64 sum of N(0,1) inputs"
printf '%-6s %10s %8s %14s %12s %11s %11s\n' codec "time(ms)" speedup "wire B/rank" "link(ms)" maxerr rmserr
rate_bps=$(python3 -c "import sys,re; m=re.fullmatch(r'([0-9.]+)([kmg]?)bit',sys.argv[1]); print(float(m[1])*{'':1,'k':1e3,'m':1e6,'g':1e9}[m[2]])" "$rate")
for q in $codecs; do
  t=$(echo "${times[$q]}" | median)
  read -r wire maxerr rmserr <<< "${rest[$q]}"
  python3 -c "import sys
t,base,wire,bps=float(sys.argv[2]),sys.argv[3],float(sys.argv[4]),float(sys.argv[7])
speed=f'{float(base)/t:.2f}x' if base else '-'
print(f'{sys.argv[1]:6s} {t/1e3:10.1f} {speed:>8s} {wire:14.0f} {wire*8/bps*1e3:12.1f} {float(sys.argv[5]):11.3g} {float(sys.argv[6]):11.3g}')" \
    "$q" "$t" "$base" "$wire" "$maxerr" "$rmserr" "$rate_bps"
done
