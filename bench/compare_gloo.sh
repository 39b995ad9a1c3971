#!/usr/bin/env bash
# Side-by-side all-reduce comparison: ECCL (eccl-bench) vs torch.distributed gloo,
# ECCL twice: as it runs by default (local peers share memory) and as eccl-tcp
# (ECCL_SHM=0, loopback TCP, how it ran before the shared-memory path). --tools adds
# ECCL from Python: eccl-python (eccl.Communicator.all_reduce on torch tensors) and
# eccl-torch (torch.distributed with the "eccl" backend), both via gloo_allreduce.py
# with the package from ECCL_PYTHONPATH (default build/python).
#
# Two cases, both float32 sum with --peers local processes (default 4):
#   large: 64 MiB  -> compares bus bandwidth, ratio = eccl/gloo   (>1: ECCL faster)
#   small: 8 bytes -> compares latency,       ratio = gloo/eccl   (>1: ECCL faster)
#
# Each case is measured --rounds times (default 3), alternating ECCL and gloo
# so that noise on a shared machine hits both; the median of each is reported.
#
# Usage: bench/compare_gloo.sh [--rounds R] [--peers N]
#                              [--iters-large I] [--warmup-large W]
#                              [--iters-small I] [--warmup-small W]
#                              [--keep DIR] [--tools "eccl eccl-tcp gloo ..."]
# Environment:
#   ECCL_BENCH  eccl-bench binary (default build/tools/eccl-bench)
#   PYTHON      python with torch (default: /usr/bin/python3 if it imports
#               torch, else python3)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
GLOO_BENCH="${here}/gloo_allreduce.py"
ECCL_BENCH="${ECCL_BENCH:-build/tools/eccl-bench}"

rounds=3
peers=4
iters_large=20
warmup_large=5
iters_small=200
warmup_small=20
keep=""
tools="eccl eccl-tcp gloo"

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

die() { echo "compare_gloo.sh: error: $*" >&2; exit 2; }

need_int() {  # name value
    if ! [[ "$2" =~ ^[0-9]+$ ]] || (( $2 < 1 )); then
        die "$1 needs a positive integer, got '$2'"
    fi
}

while (($#)); do
    case "$1" in
        --rounds)       need_int "$1" "${2:-}"; rounds="$2"; shift 2 ;;
        --peers)        need_int "$1" "${2:-}"; peers="$2"; shift 2 ;;
        --iters-large)  need_int "$1" "${2:-}"; iters_large="$2"; shift 2 ;;
        --warmup-large) [[ "${2:-}" =~ ^[0-9]+$ ]] || die "$1 needs an integer"; warmup_large="$2"; shift 2 ;;
        --iters-small)  need_int "$1" "${2:-}"; iters_small="$2"; shift 2 ;;
        --warmup-small) [[ "${2:-}" =~ ^[0-9]+$ ]] || die "$1 needs an integer"; warmup_small="$2"; shift 2 ;;
        --keep)         [[ -n "${2:-}" ]] || die "$1 needs a directory"; keep="$2"; shift 2 ;;
        --tools)        tools="${2:-}"; shift 2
                        for t in $tools; do
                            [[ " eccl eccl-tcp gloo eccl-python eccl-torch " == *" $t "* ]] || die "unknown tool '$t'"
                        done ;;
        -h|--help)      usage; exit 0 ;;
        *)              die "unknown argument '$1' (see --help)" ;;
    esac
done

# --- python with torch -------------------------------------------------------
has_torch() { "$1" -c 'import torch, torch.distributed as d; assert d.is_gloo_available()' >/dev/null 2>&1; }

PY=""
if [[ -n "${PYTHON:-}" ]]; then
    has_torch "$PYTHON" && PY="$PYTHON"
elif [[ -x /usr/bin/python3 ]] && has_torch /usr/bin/python3; then
    PY=/usr/bin/python3
elif command -v python3 >/dev/null 2>&1 && has_torch python3; then
    PY=python3
fi
if [[ -z "$PY" ]]; then
    cat >&2 <<'EOF'
compare_gloo.sh: error: no python3 can import torch with the gloo backend.
Install it with one of:
    apt-get install python3-torch     (Debian/Ubuntu, for /usr/bin/python3)
    python3 -m pip install torch      (pip; CPU-only wheels suffice)
EOF
    exit 2
fi

# --- eccl-bench ----------------------------------------------------------------
if [[ "$ECCL_BENCH" == */* ]]; then
    [[ -x "$ECCL_BENCH" ]] || die "ECCL bench '$ECCL_BENCH' not found or not executable (build it, or set ECCL_BENCH)"
else
    command -v "$ECCL_BENCH" >/dev/null 2>&1 || die "ECCL bench '$ECCL_BENCH' not found in PATH (set ECCL_BENCH)"
fi

if [[ -n "$keep" ]]; then
    mkdir -p "$keep"; work="$keep"
else
    work="$(mktemp -d "${TMPDIR:-/tmp}/compare_gloo.XXXXXX")"
    trap 'rm -rf "$work"' EXIT
fi

# Print "time_us busbw_gbps" of the allreduce row with the given byte size from
# a JSON result, after checking the tool name. Exits non-zero on bad input.
extract() {  # file expected_tool bytes
    "$PY" - "$@" <<'EOF'
import json, math, sys
path, tool, nbytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    with open(path) as f:
        text = f.read()
except OSError as exc:
    sys.exit("%s: %s" % (path, exc))
try:
    doc = json.loads(text)
except ValueError as exc:
    # Tolerate log lines around the document: take the last line that parses.
    doc = None
    for line in reversed(text.splitlines()):
        if line.lstrip().startswith("{"):
            try:
                doc = json.loads(line)
                break
            except ValueError:
                pass
    if doc is None:
        sys.exit("%s: not a JSON document (%s); output starts with: %r"
                 % (path, exc, text[:200]))
if not isinstance(doc, dict) or doc.get("tool") != tool:
    sys.exit("%s: expected \"tool\": \"%s\", got %r" % (path, tool,
             doc.get("tool") if isinstance(doc, dict) else doc))
rows = [r for r in doc.get("rows", []) if isinstance(r, dict)
        and r.get("op", "allreduce") == "allreduce" and r.get("bytes") == nbytes]
if not rows:
    sys.exit("%s: no allreduce row with bytes == %d" % (path, nbytes))
r = rows[-1]
try:
    t, bw = float(r["time_us"]), float(r["busbw_gbps"])
except (KeyError, TypeError, ValueError) as exc:
    sys.exit("%s: row lacks numeric time_us/busbw_gbps: %s" % (path, exc))
if not (math.isfinite(t) and t > 0 and math.isfinite(bw) and bw >= 0):
    sys.exit("%s: implausible values time_us=%r busbw_gbps=%r" % (path, t, bw))
print("%r %r" % (t, bw))
EOF
}

# run_one tool case bytes iters warmup round
run_one() {
    local tool="$1" case="$2" bytes="$3" iters="$4" warmup="$5" round="$6"
    local out="$work/${case}.${tool}.${round}.json" err="$work/${case}.${tool}.${round}.err"
    local -a cmd
    if [[ "$tool" == eccl || "$tool" == eccl-tcp ]]; then
        local shm=1
        [[ "$tool" == eccl-tcp ]] && shm=0
        cmd=(env ECCL_SHM="$shm" "$ECCL_BENCH" allreduce --peers "$peers" -b "$bytes" -e "$bytes"
             --dtype float32 --op sum --iters "$iters" --warmup "$warmup" --json)
    else
        local backend=gloo
        [[ "$tool" == eccl-python ]] && backend=eccl-python
        [[ "$tool" == eccl-torch ]] && backend=eccl
        cmd=(env PYTHONPATH="${ECCL_PYTHONPATH:-$PWD/build/python}" "$PY" "$GLOO_BENCH"
             --backend "$backend" --peers "$peers" -b "$bytes" -e "$bytes"
             --dtype float32 --op sum --iters "$iters" --warmup "$warmup" --json)
    fi
    if ! "${cmd[@]}" >"$out" 2>"$err"; then
        echo "compare_gloo.sh: error: command failed: ${cmd[*]}" >&2
        sed 's/^/    /' "$err" >&2
        exit 1
    fi
    local vals
    local name="${tool%-tcp}"
    [[ "$tool" == eccl-torch ]] && name=eccl
    if ! vals="$(extract "$out" "$name" "$bytes")"; then
        echo "compare_gloo.sh: error: bad output from: ${cmd[*]}" >&2
        exit 1
    fi
    echo "$vals" >"$work/${case}.${tool}.${round}.vals"
    local t bw
    read -r t bw <<<"$vals"
    printf '#   round %d/%d  %-11s %-6s time %12.2f us  busbw %9.4f GB/s\n' \
        "$round" "$rounds" "$tool" "$case" "$t" "$bw"
}

large_bytes=$((64 * 1024 * 1024))
small_bytes=8

echo "# ECCL vs gloo all_reduce, float32 sum, $peers peers, $rounds round(s), median reported"
echo "# eccl: $ECCL_BENCH"
echo "# gloo: $PY $GLOO_BENCH (torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null))"
echo "# host: $(uname -n), $(nproc) cpu(s)"
for ((r = 1; r <= rounds; r++)); do
    # Alternate which tool goes first so neither always gets the "fresh" slot.
    read -r -a order <<<"$tools"
    if ! ((r % 2)); then  # reversed
        for ((i = 0, j = ${#order[@]} - 1; i < j; i++, j--)); do
            t=${order[i]}; order[i]=${order[j]}; order[j]=$t
        done
    fi
    for tool in "${order[@]}"; do
        run_one "$tool" large "$large_bytes" "$iters_large" "$warmup_large" "$r"
    done
    for tool in "${order[@]}"; do
        run_one "$tool" small "$small_bytes" "$iters_small" "$warmup_small" "$r"
    done
done

"$PY" - "$work" "$rounds" $tools <<'EOF'
import statistics, sys
work, rounds, tools = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

def med(case, tool, idx):
    vals = []
    for r in range(1, rounds + 1):
        with open("%s/%s.%s.%d.vals" % (work, case, tool, r)) as f:
            vals.append(float(f.read().split()[idx]))
    return statistics.median(vals)

def ratio(num, den):
    return "%.2fx" % (num / den) if den > 0 else "inf"

bw = {t: med("large", t, 1) for t in tools}
us = {t: med("small", t, 0) for t in tools}
print()
print("%-12s %16s %16s %12s %12s %14s" % ("tool", "64MiB busbw", "8B time(us)", "bw/gloo",
                                          "gloo/time", "vs eccl (8B)"))
for t in tools:
    print("%-12s %16.4f %16.2f %12s %12s %14s" % (
        t, bw[t], us[t],
        ratio(bw[t], bw["gloo"]) if "gloo" in bw else "-",
        ratio(us["gloo"], us[t]) if "gloo" in us else "-",
        "%+.1f us" % (us[t] - us["eccl"]) if "eccl" in us else "-"))
print("# bw/gloo and gloo/time: >1 means faster than gloo; vs eccl: time added over eccl-bench")
EOF
