#!/usr/bin/env bash
# A network lab of namespaces on one bridge (addresses from 198.18.0.0/15, the
# benchmarking range): the root namespace is 198.18.0.1 (where a master runs),
# host i is namespace eccl-lab-i at 198.18.0.(10+i). Each host's link is capped
# in both directions with tc tbf; --pair-rate caps what host I sends to host J
# further (host I's upload then uses htb, a class per capped destination: a
# slow path between two hosts that both have fast links); optionally each TCP flow is capped
# with an iptables hashlimit DROP rule per 5-tuple (a WAN path that limits
# one flow).
#
#   scripts/lab/lab.sh up N [--rate 1gbit] [--host-rate I RATE]... [--pair-rate I J RATE]...
#                         [--flow-cap 16mb/s]
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
  declare -A hostRate=() pairRate=()
  while (($#)); do
    case $1 in
      --rate) rate=$2; shift 2 ;;
      --flow-cap) flowcap=$2; shift 2 ;;
      --host-rate) hostRate[$2]=$3; shift 3 ;;
      --pair-rate) pairRate[$2,$3]=$4; shift 4 ;;
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
    # Upload: the host's side; download: the bridge's side towards it. With
    # capped paths from this host, htb (1:1 the host's link, 1:10 the other
    # paths, 1:(100+j) the path to host j); else tbf, which reaches 3 % more
    # of the rate than htb here.
    local r=${hostRate[$i]:-$rate} capped=0
    for key in "${!pairRate[@]}"; do
      if [ "${key%,*}" = "$i" ]; then capped=1; fi
    done
    if [ "$capped" = 0 ]; then
      ip netns exec "$ns" tc qdisc add dev "$in" root tbf rate "$r" burst 512kb latency 50ms
    else
      ip netns exec "$ns" tc qdisc add dev "$in" root handle 1: htb default 10
      ip netns exec "$ns" tc class add dev "$in" parent 1: classid 1:1 htb rate "$r" burst 512kb quantum 60000
      ip netns exec "$ns" tc class add dev "$in" parent 1:1 classid 1:10 htb rate "$r" burst 512kb quantum 60000
      for key in "${!pairRate[@]}"; do
        local from=${key%,*} to=${key#*,}
        [ "$from" = "$i" ] || continue
        ip netns exec "$ns" tc class add dev "$in" parent 1:1 classid "1:$((100 + to))" htb \
          rate "${pairRate[$key]}" ceil "${pairRate[$key]}" burst 64kb quantum 60000
        ip netns exec "$ns" tc filter add dev "$in" parent 1: protocol ip prio 1 u32 \
          match ip dst "$(addr "$to")/32" flowid "1:$((100 + to))"
      done
    fi
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
