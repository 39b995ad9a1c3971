#!/usr/bin/env bash
# CI: ecclCommOptimizeTopology in the network lab picks the known best ring.
# 4 hosts at 400 Mbit/s each way; the paths between hosts 1 and 2 and between
# hosts 3 and 4, neighbours in admission order (1-2-3-4), capped at 40 Mbit/s
# both ways. The only rings without a slow hop are 1-3-2-4 and its reverse
# 1-4-2-3. Asserts that every peer's all-reduce checked out before and after,
# that the master logged the matrix, and that the ring it applied is one of
# those two. Asserts no timing. Exits 77 (skipped) without root or netns.
#
#   tests/lab/optimize_topology.sh BUILD_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
build=$(cd "$1" && pwd)
source bench/lab_common.sh
lab_require
lab_session optimize-topology-lab-test
scripts/lab/lab.sh up 4 --rate 400mbit --pair-rate 1 2 40mbit --pair-rate 2 1 40mbit \
  --pair-rate 3 4 40mbit --pair-rate 4 3 40mbit
# Every peer checks its all-reduce result (eccl-bench exits non-zero otherwise).
lab_bench "$work/out" 4 ECCL_PROBE_MS=400 -- -b 256K -e 256K --iters 2 --warmup 1 --optimize
python3 - "$work/out.master" <<'PY'
import re, sys
log = open(sys.argv[1]).read()
host = {m[0]: int(m[1]) - 10
        for m in re.findall(r"peer (\d+) registered \(group 0, data 198\.18\.0\.(\d+):", log)}
assert len(host) == 4, f"expected 4 registrations in the master log, found {host}"
assert "bandwidth (MB/s, row sends to column)" in log, "the master did not log the matrix"
rings = re.findall(r"group 0 ring: ([\d >-]+) \(", log)
assert rings, "the master did not log a ring"
ring = [host[p] for p in rings[-1].split(" -> ")]
print("ring picked (by host):", "-".join(map(str, ring)))
print("\n".join(l for l in log.splitlines() if "MB/s" in l or "198.18" in l and "peer" in l and "registered" not in l))
slow = [{1, 2}, {3, 4}]
hops = [{ring[i], ring[(i + 1) % 4]} for i in range(4)]
bad = [h for h in hops if h in slow]
assert not bad, f"ring {ring} keeps the slow hops {bad}"
PY
echo "optimize-topology lab: ok"
