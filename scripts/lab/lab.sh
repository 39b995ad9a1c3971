#!/usr/bin/env bash
# A network lab of namespaces on one bridge (addresses from 198.18.0.0/15, the
# benchmarking range): the root namespace is 198.18.0.1 (where a master runs),
# host i is namespace eccl-lab-i at 198.18.0.(10+i). Each host's link is capped
# with tc tbf in both directions; optionally each TCP flow is capped with an
# iptables hashlimit DROP rule per 5-tuple (a WAN path that limits one flow).
#
#   scripts/lab/lab.sh up N [--rate 1gbit] [--host-rate I RATE]... [--flow-cap 16mb/s]
#   scripts/lab/lab.sh exec I CMD...      run CMD in host I's namespace
#   scripts/lab/lab.sh addr I             print host I's address
#   scripts/lab/lab.sh down               remove everything the lab made
# Needs root, iproute2 and (for --flow-cap) iptables.
set -euo pipefail

BR=eccl-lab-br
PREFIX=eccl-lab
ROOT_ADDR=198.18.0.1

addr() { echo "198.18.0.$((10 + $1))"; }

down() {
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^${PREFIX}-" || true); do
    ip netns del "$ns" 2>/dev/null || true
  done
  ip link del "$BR" 2>/dev/null || true
  for v in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^elb" || true); do
    ip link del "$v" 2>/dev/null || true
  done
}

up() {
  local n=$1
  shift
  local rate=1gbit flowcap=""
  declare -A hostRate=()
  while (($#)); do
    case $1 in
      --rate) rate=$2; shift 2 ;;
      --flow-cap) flowcap=$2; shift 2 ;;
      --host-rate) hostRate[$2]=$3; shift 3 ;;
      *) echo "lab.sh: unknown option $1" >&2; exit 2 ;;
    esac
  done
  down
  ip link add "$BR" type bridge
  ip addr add "$ROOT_ADDR/24" dev "$BR"
  ip link set "$BR" up
  for i in $(seq 1 "$n"); do
    local ns="${PREFIX}-$i" out="elb${i}o" in="elb${i}i"
    ip netns add "$ns"
    ip link add "$out" type veth peer name "$in"
    ip link set "$in" netns "$ns"
    ip link set "$out" master "$BR" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$(addr "$i")/24" dev "$in"
    ip -n "$ns" link set "$in" up
    # Upload: the host's side; download: the bridge's side towards it.
    local r=${hostRate[$i]:-$rate}
    ip netns exec "$ns" tc qdisc add dev "$in" root tbf rate "$r" burst 512kb latency 50ms
    tc qdisc add dev "$out" root tbf rate "$r" burst 512kb latency 50ms
    if [ -n "$flowcap" ]; then
      ip netns exec "$ns" iptables -A OUTPUT -p tcp -m hashlimit --hashlimit-name "flow$i" \
        --hashlimit-above "$flowcap" --hashlimit-mode srcip,srcport,dstip,dstport -j DROP
    fi
  done
}

case ${1:-} in
  up) shift; up "$@" ;;
  down) down ;;
  exec) shift; i=$1; shift; exec ip netns exec "${PREFIX}-$i" "$@" ;;
  addr) addr "$2" ;;
  *) sed -n '2,13p' "$0"; exit 2 ;;
esac
