#!/usr/bin/env bash
# CI: a group that mixes peers on one host with peers on another. Two hosts of
# the network lab (network namespaces on this machine: the same kernel, so the
# same boot id, but not the same network namespace), two peers on each,
# admitted host 1, host 1, host 2, host 2: the ring's hops inside a host run
# through shared memory and the two between hosts over TCP, never the other
# way (an address is not what decides). Every peer checks its results, for a
# small op (the gather path, on its far links too) and a ring op. Exits 77
# (skipped) without root or netns.
#
#   tests/lab/mixed_hosts.sh BUILD_DIR
set -euo pipefail
cd "$(dirname "$0")/../.."
build=$(cd "$1" && pwd)
source bench/lab_common.sh
lab_require
lab_session mixed-hosts-lab-test
scripts/lab/lab.sh up 2 --rate 1gbit
lab_master_start
pids=()
for host in 1 1 2 2; do
  scripts/lab/lab.sh exec "$host" "$build/tools/eccl-bench" allreduce --master "198.18.0.1:$port" \
    --world 4 --json -b 64 -e 4M -f 65536 --iters 3 --warmup 1 > "$work/out.${#pids[@]}" &
  pids+=($!)
  sleep 0.3
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
lab_master_stop
[ "$rc" = 0 ] || { echo "a peer failed (see above)"; cat "$work/master" | tail -20; exit 1; }
python3 - "$work"/out.* <<'PY'
import json, sys
docs = [json.loads(l) for f in sys.argv[1:] for l in open(f) if l.lstrip().startswith("{")]
assert len(docs) == 1, f"expected rank 0's report, got {len(docs)}"
rows = docs[0]["rows"]
assert [r["bytes"] for r in rows] == [64, 4 << 20], rows
for r in rows:
    assert r["check"], f"wrong results at {r['bytes']} bytes"
    # Ring 1a 1b 2a 2b: 1a->1b and 2a->2b inside a host, 1b->2a and 2b->1a between hosts.
    assert r["shm_links"] == 2, f"{r['shm_links']} of 4 outgoing links used shared memory at {r['bytes']} bytes (want 2)"
    print(f"{r['bytes']} bytes: results ok, {r['shm_links']} of 4 links through shared memory")
PY
echo "mixed hosts lab: ok"
