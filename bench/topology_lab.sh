#!/usr/bin/env bash
# Bandwidth-aware ring order across a heterogeneous network lab
# (scripts/lab/lab.sh): 4 hosts at RATE each way, but the paths between hosts
# 1 and 2 and between hosts 3 and 4, neighbours in admission order, capped at
# SLOW both ways. Each round runs the all-reduce benchmark twice, alternated
# so that noise hits both: in admission order (ring 1-2-3-4), and after
# ecclCommOptimizeTopology (probes, then the ring it picks). Prints the median
# busbw of each, their ratio, the median time of the optimize call (probes
# included) and the ring the master picked.
#
#   bench/topology_lab.sh [--rate 1gbit] [--slow 100mbit] [--size 64M] [--iters 3]
#                         [--warmup 2] [--rounds 3] [--probe-ms 1000]
# Binaries from ${BUILD:-build}. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
hosts=4 rate=1gbit slow=100mbit size=64M iters=3 warmup=2 rounds=3 probe_ms=1000
while (($#)); do
  case $1 in
    --rate) rate=$2; shift 2 ;;
    --slow) slow=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --probe-ms) probe_ms=$2; shift 2 ;;
    *) sed -n '2,14p' "$0"; exit 2 ;;
  esac
done
source bench/lab_common.sh
lab_session topology-lab-bench
scripts/lab/lab.sh up "$hosts" --rate "$rate" --pair-rate 1 2 "$slow" --pair-rate 2 1 "$slow" \
  --pair-rate 3 4 "$slow" --pair-rate 4 3 "$slow"

# One run -> "busbw_Gbit/s optimize_ms" of rank 0's row.
run() {
  local out=$work/out
  lab_bench "$out" "$hosts" ECCL_PROBE_MS="$probe_ms" -- \
    -b "$size" -e "$size" --iters "$iters" --warmup "$warmup" "$@"
  python3 -c 'import json,sys
for line in open(sys.argv[1]):
    if line.strip().startswith("{"):
        d=json.loads(line); print(d["rows"][0]["busbw_gbps"] * 8, d.get("optimize_ms", 0)); break' "$out"
  # The ring the master picked, by host (peer ids mapped through their registrations).
  python3 - "$out.master" >> "$work/rings" <<'PY'
import re, sys
log = open(sys.argv[1]).read()
host = {m[0]: int(m[1]) - 10 for m in re.findall(r"peer (\d+) registered \(group 0, data 198\.18\.0\.(\d+):", log)}
rings = re.findall(r"group 0 ring: ([\d >-]+) \(", log)
if rings:
    print("-".join(str(host.get(p, "?")) for p in rings[-1].split(" -> ")))
PY
}

declare -a plain=() optimized=() probe=()
for r in $(seq 1 "$rounds"); do
  read -r bw _ < <(run)
  plain+=("$bw")
  read -r bw ms < <(run --optimize)
  optimized+=("$bw")
  probe+=("$ms")
  echo "round $r: admission order ${plain[-1]} Gbit/s, optimized ${optimized[-1]} Gbit/s (optimize ${ms} ms)"
done
p=$(echo "${plain[*]}" | median)
o=$(echo "${optimized[*]}" | median)
m=$(echo "${probe[*]}" | median)
echo
echo "4 hosts at $rate, paths 1<->2 and 3<->4 at $slow, $size all-reduce, median of $rounds rounds:"
printf '  admission order (ring 1-2-3-4): busbw %.3f Gbit/s\n' "$p"
printf '  after ecclCommOptimizeTopology: busbw %.3f Gbit/s (%.2fx); the call took %.0f ms\n' \
  "$o" "$(python3 -c "print($o / $p)")" "$m"
echo "  rings picked (by host): $(sort "$work/rings" | uniq -c | awk '{printf "%s x%s  ", $2, $1}')"
