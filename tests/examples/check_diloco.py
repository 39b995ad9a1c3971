#!/usr/bin/env python3
"""Runs eccl-diloco (a join and a SIGKILL midway) and checks its output:
every member prints the same state hash for the same revision, the join and
the kill happened and the world size changed accordingly, and the loss falls.

    check_diloco.py PATH/TO/eccl-diloco [eccl-diloco options...]
"""
import re
import subprocess
import sys
from collections import defaultdict


def main():
    proc = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=240)
    out = proc.stdout
    print(out)
    print(proc.stderr, file=sys.stderr)
    if proc.returncode != 0:
        sys.exit(f"eccl-diloco exited with {proc.returncode}")
    lines = re.findall(r"outer revision=(\d+) world=(\d+) rank=(\d+) pid=(\d+) hash=(\w+) loss=([\d.e+-]+)", out)
    if not lines:
        sys.exit("no outer step was printed")
    by_rev = defaultdict(set)
    worlds = []
    losses = []
    for rev, world, _rank, _pid, h, loss in lines:
        by_rev[int(rev)].add(h)
        worlds.append(int(world))
        losses.append((int(rev), float(loss)))
    bad = {r: hs for r, hs in by_rev.items() if len(hs) != 1}
    if bad:
        sys.exit(f"members disagree on the state at revisions {sorted(bad)}: {bad}")
    if "event join" not in out or "event kill" not in out:
        sys.exit("the join or the kill did not happen")
    peers = int(sys.argv[sys.argv.index("--peers") + 1]) if "--peers" in sys.argv else 3
    if max(worlds) != peers + 1:
        sys.exit(f"the newcomer was never admitted (worlds seen: {sorted(set(worlds))})")
    last_world = worlds[-1]
    if last_world != peers:
        sys.exit(f"the killed peer is still counted at the end (world {last_world})")
    losses.sort()
    first, last = losses[0][1], losses[-1][1]
    if not last < 0.25 * first:
        sys.exit(f"the loss did not fall enough: {first} -> {last}")
    print(f"check_diloco: {len(by_rev)} revisions, one hash each; worlds {sorted(set(worlds))}; "
          f"loss {first:.4f} -> {last:.4f}")


if __name__ == "__main__":
    main()
