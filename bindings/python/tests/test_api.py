"""One process: lifecycle, errors and their mapping, and the arrays the binding refuses."""

import threading
import time

import numpy as np
import pytest

import eccl
from conftest import run_group
from eccl import _eccl


def test_version_is_the_c_librarys():
    major, minor, patch = (int(v) for v in eccl.__version__.split("."))
    assert _eccl.library_version() == major * 10000 + minor * 100 + patch


def test_master_context_manager_port_address_and_close():
    with eccl.Master("127.0.0.1:0") as m:
        assert m.port > 0
        assert m.address == f"127.0.0.1:{m.port}"
        assert not m.closed
    assert m.closed
    m.close()  # idempotent
    with pytest.raises(eccl.InvalidUsageError, match="closed"):
        m.port


def test_master_refuses_a_public_address_without_a_token():
    with pytest.raises(eccl.InvalidUsageError, match="ecclInvalidUsage"):
        eccl.Master("0.0.0.0:0", auth_token="")


def test_bad_listen_address_is_an_argument_error():
    with pytest.raises(eccl.InvalidArgumentError, match="host:port"):
        eccl.Master("localhost")


def test_world_of_one_lifecycle(master):
    with eccl.Communicator(master.address) as comm:
        comm.connect()
        assert (comm.world_size, comm.rank, comm.peer_group) == (1, 0, 0)
        assert comm.epoch >= 1
        assert not comm.peers_pending
        x = np.arange(5, dtype=np.float32)
        info = comm.all_reduce(x)
        assert info.world_size == 1 and np.array_equal(x, np.arange(5))
    assert comm.closed
    with pytest.raises(eccl.InvalidUsageError, match="closed"):
        comm.all_reduce(x)
    comm.close()


def test_unreachable_master_raises_master_unreachable():
    with eccl.Master() as m:
        address = m.address
    with eccl.Communicator(address, connect_timeout=0.5) as comm:
        with pytest.raises(eccl.MasterUnreachableError) as e:
            comm.connect()
    assert "ecclMasterUnreachable" in str(e.value)
    assert isinstance(e.value, ConnectionError) and e.value.result == eccl.Result.MASTER_UNREACHABLE


def test_wrong_token_raises_auth_failed():
    with eccl.Master(auth_token="right") as m:
        with eccl.Communicator(m.address, auth_token="wrong") as comm:
            with pytest.raises(eccl.AuthFailedError, match="ecclAuthFailed"):
                comm.connect()
        with eccl.Communicator(m.address, auth_token="right") as comm:
            comm.connect()
            assert comm.world_size == 1


@pytest.mark.parametrize("result", list(eccl.Result)[1:])
def test_every_result_maps_to_its_own_error_class(result):
    e = eccl._errors.from_result(int(result), "why")
    assert isinstance(e, eccl.Error) and e.result == result and e.message == "why"
    assert type(e) is not eccl.Error
    assert str(e).startswith("ecc") and str(e).endswith(": why")


def test_unknown_result_is_a_plain_error():
    e = eccl._errors.from_result(99, "new")
    assert type(e) is eccl.Error and "99" in str(e)


def test_error_classes_are_also_the_matching_builtins():
    assert issubclass(eccl.TimeoutError, TimeoutError)
    assert issubclass(eccl.InvalidArgumentError, ValueError)
    assert issubclass(eccl.UnsupportedError, NotImplementedError)
    assert issubclass(eccl.PeerLostError, RuntimeError)


def test_non_contiguous_numpy_is_refused(solo):
    with pytest.raises(ValueError, match="not contiguous.*ascontiguousarray"):
        solo.all_reduce(np.ones((4, 4))[:, ::2])


def test_read_only_array_is_refused_in_place_but_fine_as_input(solo):
    x = np.ones(3)
    x.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        solo.all_reduce(x)
    out = np.zeros(3)
    solo.all_reduce(x, out=out)
    assert np.array_equal(out, x)


@pytest.mark.parametrize("bad", [np.ones(2, np.complex64), np.ones(2, bool), np.ones(2, ">f4")])
def test_unsupported_numpy_types_are_type_errors(solo, bad):
    with pytest.raises(TypeError, match="does not reduce"):
        solo.all_reduce(bad)


def test_objects_without_memory_are_type_errors(solo):
    with pytest.raises(TypeError, match="str.*buffer protocol nor __dlpack__"):
        solo.all_reduce("abc")


def test_out_of_another_size_or_type_is_refused(solo):
    with pytest.raises(ValueError, match="element type and count"):
        solo.all_reduce(np.ones(4, np.float32), out=np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="element type and count"):
        solo.all_reduce(np.ones(4, np.float32), out=np.zeros(4, np.float64))


def test_enum_names_are_accepted_and_bad_ones_named(solo):
    x = np.array([3.0, 1.0])
    solo.all_reduce(x, op="MAX", quantization="None", rounding="nearest")
    assert list(x) == [3.0, 1.0]
    with pytest.raises(eccl.InvalidArgumentError, match="op 'mean' is not one of: sum, avg"):
        solo.all_reduce(x, op="mean")
    with pytest.raises(eccl.InvalidArgumentError, match="quantization 7"):
        solo.all_reduce(x, quantization=7)


def test_codec_on_integers_is_the_librarys_error(solo):
    with pytest.raises(eccl.InvalidArgumentError, match="ecclInvalidArgument"):
        solo.all_reduce(np.ones(4, np.int32), quantization="uint8")


def test_broadcast_root_outside_the_world(solo):
    with pytest.raises(eccl.InvalidArgumentError, match="root 5"):
        solo.broadcast(np.ones(3), root=5)


def test_work_waits_from_another_thread_and_twice(solo):
    x = np.ones(1000, np.float64)
    work = solo.all_reduce_async(x)
    seen = []
    t = threading.Thread(target=lambda: seen.append(work.wait()))
    t.start()
    t.join(10)
    assert seen and seen[0].world_size == 1
    assert work.done() and work.wait() == seen[0]


def test_async_calls_return_at_once_and_close_finishes_what_is_in_flight(master):
    # Member 1 arrives late: member 0's async ops cannot finish before it does.
    def member(comm, i):
        x = [np.full(1000, i + 1.0) for _ in range(3)]
        if i == 1:
            time.sleep(0.5)
            for tag, t in enumerate(x):
                comm.all_reduce(t, tag=tag)
            return x
        t0 = time.monotonic()
        works = [comm.all_reduce_async(t, tag=tag) for tag, t in enumerate(x)]
        issued = time.monotonic() - t0
        running = [not w.done() for w in works]
        comm.close()  # waits for the three ops, then leaves
        return issued, running, [w.done() for w in works], [w.wait().world_size for w in works], x

    (issued, running, done, worlds, x), y = run_group(master, 2, member)
    assert issued < 0.3, f"issuing 3 async ops took {issued:.2f} s: they ran inside the call"
    assert all(running) and all(done) and worlds == [2, 2, 2]
    for t in x + y:
        assert (t == 3.0).all()


def test_shared_state_refuses_unknown_divergent_names_and_non_tensors():
    with pytest.raises(eccl.InvalidArgumentError, match="allow_divergence names no tensor"):
        eccl.SharedState({"w": np.ones(2)}, allow_divergence=["v"])
    with pytest.raises(eccl.InvalidArgumentError, match="'step' is a int, not a tensor"):
        eccl.SharedState.from_state_dict({"w": np.ones(2), "step": 3})


def test_help_reads_well():
    doc = eccl.Communicator.__doc__ + eccl.Communicator.all_reduce.__doc__
    assert "peer_group" in doc and "identical bits" in doc


def test_native_stub_names_exactly_what_the_module_has():
    import ast
    from pathlib import Path

    stub = ast.parse((Path(eccl.__file__).parent / "_eccl.pyi").read_text())
    declared = {}
    for node in stub.body:
        if isinstance(node, ast.ClassDef):
            declared[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)}
        elif isinstance(node, ast.FunctionDef):
            declared.setdefault("", set()).add(node.name)
    public = lambda obj: {n for n in dir(obj) if not n.startswith("_")} | (  # noqa: E731
        {"__init__"} if isinstance(obj, type) else set())
    assert declared[""] == {n for n in public(_eccl) if callable(getattr(_eccl, n))
                            and not isinstance(getattr(_eccl, n), type)} - {"__init__"}
    for name in ("Master", "Request", "Comm"):
        assert declared[name] == public(getattr(_eccl, name)) - (
            set() if name != "Request" else {"__init__"}), name


class _DlpackOnly:
    """An array seen through __dlpack__ alone (as from JAX or CuPy), not the buffer protocol."""

    def __init__(self, a):
        self.a = a

    def __dlpack__(self, **kwargs):
        return self.a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.a.__dlpack_device__()


def test_dlpack_producers_are_used_in_place_and_read_only_ones_refused(solo):
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    solo.all_reduce(_DlpackOnly(a), op="max")
    out = np.zeros(6, np.float32)
    solo.all_reduce(_DlpackOnly(a), out=_DlpackOnly(out))
    assert np.array_equal(out, a.ravel())
    ro = np.ones(3, np.float32)
    ro.flags.writeable = False
    # NumPy >= 2.1 marks it read-only (DLPack 1.0); older NumPy refuses to export it at all.
    with pytest.raises((TypeError, ValueError), match="(?i)read-?only"):
        solo.all_reduce(_DlpackOnly(ro))
