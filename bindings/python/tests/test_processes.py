"""Every element type, NumPy and torch (bfloat16 included), across separate processes."""

import importlib.util

from conftest import Peer


def test_every_dtype_across_processes(master):
    peers = [Peer(master, "--world", "3", "--dtypes") for _ in range(3)]
    expected = 11 + (9 if importlib.util.find_spec("torch") else 0)
    for p in peers:
        assert p.finish(120) == 0, p.lines[-10:]
        assert f"dtypes ok {expected}" in p.lines, p.lines[-10:]
