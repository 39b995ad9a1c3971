#!/usr/bin/env bash
# All-reduce across an emulated WAN path: the namespace lab (scripts/lab/lab.sh:
# H hosts, one peer each, RATE each way per host, every TCP flow capped at
# FLOWCAP by an iptables hashlimit rule), the master in the root namespace.
# Each setting in --streams ("default" = no stream count given, so the stream
# controller picks) runs once per round, alternated so that noise hits all of
# them. Prints per setting the median busbw as a fraction of the link rate and
# of what iperf3 reaches between two hosts of the same lab with as many flows
# as the setting used, and the stream count the controller chose.
#
#   bench/wan_lab.sh [--hosts 3] [--rate 1gbit] [--flow-cap 16mb/s] [--size 64M]
#                    [--iters 3] [--warmup 6] [--rounds 3] [--streams "default 4 8 16"]
# Binaries from ${BUILD:-build}. Needs root and iperf3.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
hosts=3 rate=1gbit flowcap=16mb/s size=64M iters=3 warmup=6 rounds=3 settings="default 4 8 16"
while (($#)); do
  case $1 in
    --hosts) hosts=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --flow-cap) flowcap=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --streams) settings=$2; shift 2 ;;
    *) sed -n '2,13p' "$0"; exit 2 ;;
  esac
done
source bench/lab_common.sh
export ECCL_AUTH_TOKEN=${ECCL_AUTH_TOKEN:-wan-lab-bench}
work=$(mktemp -d)
cleanup() {
  [ -n "${master_pid:-}" ] && kill "$master_pid" 2>/dev/null || true
  [ -n "${iperf_pid:-}" ] && kill "$iperf_pid" 2>/dev/null || true
  scripts/lab/lab.sh down
  rm -rf "$work"
}
trap cleanup EXIT
scripts/lab/lab.sh up "$hosts" --rate "$rate" --flow-cap "$flowcap"
rate_gbps=$(python3 -c 'import re,sys
m=re.fullmatch(r"([0-9.]+)([kmg]?)bit",sys.argv[1].lower())
print(float(m.group(1))*{"":1e-9,"k":1e-6,"m":1e-3,"g":1}[m.group(2)])' "$rate")

# One run -> "busbw_Gbit/s streams" of rank 0's row (eccl-bench reports GB/s).
run() {
  local s=$1 out=$work/out
  local opt=()
  [ "$s" != default ] && opt=(--streams "$s")
  lab_bench "$out" "$hosts" -- -b "$size" -e "$size" --iters "$iters" --warmup "$warmup" "${opt[@]}"
  python3 -c 'import json,sys
for line in open(sys.argv[1]):
    line=line.strip()
    if line.startswith("{"):
        d=json.loads(line); r=d["rows"][0]
        n=(str(r["streams_min"]) if r["streams_min"] == r["streams_max"]
           else str(r["streams_min"]) + "-" + str(r["streams_max"]))
        print(r["busbw_gbps"] * 8, n); break' "$out"
}

# iperf3 from host 1 to host 2 with P parallel flows -> Gbit/s.
iperf() {
  local p=$1
  scripts/lab/lab.sh exec 2 iperf3 -s -1 -p 5201 > /dev/null 2>&1 &
  iperf_pid=$!
  sleep 0.3
  scripts/lab/lab.sh exec 1 iperf3 -c "$(scripts/lab/lab.sh addr 2)" -p 5201 -P "$p" -t 4 -O 1 -J \
    > "$work/iperf.json"
  wait "$iperf_pid" 2>/dev/null || true
  iperf_pid=""
  python3 -c 'import json,sys
print(json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"]/1e9)' "$work/iperf.json"
}

declare -A bw chosen
for r in $(seq 1 "$rounds"); do
  for s in $settings; do
    read -r b n < <(run "$s")
    bw[$s]+="$b "
    chosen[$s]=$n
    echo "round $r: streams $s -> busbw $b Gbit/s ($n streams)"
  done
done
echo
printf '%-9s %8s %12s %10s %14s %12s\n' streams used busbw_Gbit/s of_link iperf3_Gbit/s of_iperf3
for s in $settings; do
  m=$(echo "${bw[$s]}" | median)
  n=${chosen[$s]}
  [ "$n" = 0 ] && n=$s
  ip=$(iperf "${n%%-*}")  # as many flows as the link with the fewest streams
  python3 -c 'import sys
s,n,m,ip,rate=sys.argv[1],sys.argv[2],float(sys.argv[3]),float(sys.argv[4]),float(sys.argv[5])
print(f"{s:<9} {n:>8} {m:12.3f} {m/rate:9.1%} {ip:14.3f} {m/ip:11.1%}")' "$s" "$n" "$m" "$ip" "$rate_gbps"
done
