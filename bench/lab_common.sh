# Sourced by the lab benchmarks (codec_lab.sh, topology_lab.sh, ...) and tests/lab/: one eccl-bench
# peer per host of the namespace lab (scripts/lab/lab.sh), the master in the
# root namespace at 198.18.0.1 (tls_cost.sh, codec_lab.sh, sync_lab.sh).
# Expects $build (binaries) and $work (a scratch directory); sets master_pid
# while a master runs, so a trap can kill it.
#
#   lab_bench OUT HOSTS [VAR=VALUE...] -- [eccl-bench allreduce options]
# runs one benchmark with the environment VAR=VALUE on master and peers and
# writes every peer's JSON line to OUT (the master's log to OUT.master).
# Peers start 0.2 s apart, host 1 first: the admission order (the ring before
# any ecclCommOptimizeTopology) is the host order.
lab_bench() {
  local out=$1 hosts=$2
  shift 2
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  lab_master_start "${envs[@]}"
  local pids=()
  for i in $(seq 1 "$hosts"); do
    scripts/lab/lab.sh exec "$i" env "${envs[@]}" "$build/tools/eccl-bench" allreduce \
      --master "198.18.0.1:$port" --world "$hosts" --json "$@" > "$work/out.$i" &
    pids+=($!)
    sleep 0.2
  done
  local rc=0
  for p in "${pids[@]}"; do wait "$p" || rc=1; done
  lab_master_stop
  cat "$work"/out.* > "$out"
  rm -f "$work"/out.*
  cp "$work/master" "$out.master"
  return $rc
}

# Exits 77 (skipped), saying why, where the lab cannot run: not root, or no network
# namespaces (the CI tests call it before lab_session).
lab_require() {
  if [ "$(id -u)" != 0 ]; then echo "skipped: needs root (network namespaces, tc)"; exit 77; fi
  if ! ip netns add eccl-lab-probe 2>/dev/null; then
    echo "skipped: cannot create a network namespace here"; exit 77
  fi
  ip netns del eccl-lab-probe
}

# Exports ECCL_AUTH_TOKEN (unless set: DEFAULT), makes $work and, on exit,
# stops a master still running, takes the lab down and removes $work.
#
#   lab_session DEFAULT_TOKEN
lab_session() {
  export ECCL_AUTH_TOKEN=${ECCL_AUTH_TOKEN:-$1}
  work=$(mktemp -d)
  trap lab_session_end EXIT
}
lab_session_end() {
  [ -n "${master_pid:-}" ] && kill "$master_pid" 2>/dev/null || true
  scripts/lab/lab.sh down
  rm -rf "$work"
}

# Starts eccl-master in the root namespace with the environment VAR=VALUE...
# (its log at info level unless they say otherwise, in $work/master); sets
# master_pid and port.
lab_master_start() {
  env ECCL_LOG_LEVEL=info "$@" "$build/tools/eccl-master" --listen 198.18.0.1:0 > "$work/master" 2>&1 &
  master_pid=$!
  port=""
  for _ in $(seq 100); do
    port=$(sed -n 's/^eccl-master listening on [^:]*:\([0-9]*\)$/\1/p' "$work/master")
    [ -n "$port" ] && break
    sleep 0.05
  done
}

lab_master_stop() {
  kill "$master_pid"
  wait "$master_pid" 2>/dev/null || true
  master_pid=""
}

# The median of whitespace-separated numbers on stdin.
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
