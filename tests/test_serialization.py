import collections
import hashlib
import os
import pickle
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import core
from core import serialization
from core.backend import array_module
from core.serialization import CheckpointError, load, save

REPO = Path(__file__).resolve().parents[1]


def checkpoint_bytes(payload, magic=b"RLGENCKP", version=1):
    """A file in the documented layout around an arbitrary payload."""
    return struct.pack("<8sIQ32s", magic, version, len(payload), hashlib.sha256(payload).digest()) + payload


def assert_same(a, b):
    assert type(a) is type(b), (a, b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
        assert b.flags.writeable
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b


def test_round_trip_nested_structure_and_dtypes(tmp_path):
    rng = np.random.default_rng(0)
    obj = {
        "floats": [rng.standard_normal((2, 3)).astype(dtype) for dtype in (np.float16, np.float32, np.float64)],
        "ints": tuple(np.arange(-3, 3).astype(dtype) for dtype in (np.int8, np.int32, np.int64))
        + (np.arange(4, dtype=np.uint8), np.array([2**64 - 1], dtype=np.uint64)),
        "bool": np.array([True, False]),
        "complex": np.array([1 + 2j], dtype=np.complex64),
        "strided": np.arange(12.0).reshape(3, 4)[:, ::2],
        "fortran": np.asfortranarray(np.arange(6).reshape(2, 3)),
        "read_only": np.broadcast_to(np.arange(3), (2, 3)),
        "empty": np.zeros((0, 3), dtype=np.float32),
        "zero_d": np.array(7.5),
        "structured": np.array([(1, [0.5, 1.5])], dtype=[("a", "<i4"), ("b", "<f8", (2,))]),
        "dates": np.array(["2020-01-01", "2021-06-30"], dtype="datetime64[D]"),
        "text": np.array(["ab", "c"]),
        "numpy_scalars": [np.float32(2.5), np.int64(-3), np.bool_(True)],
        "python": [1, 2.5, 1 + 2j, "s", b"\x00b", None, True, {1, 2}, frozenset({3})],
        "ordered": collections.OrderedDict([("z", 1), ("a", 2)]),
        0: "int key", (1, "tuple"): "tuple key",
        "nested": {"deeper": {"deepest": [np.ones(2, dtype=np.float32)]}},
    }
    save(obj, tmp_path / "ckpt")
    assert_same(obj, load(tmp_path / "ckpt"))


def test_random_generator_state_round_trips(tmp_path):
    pcg, mt = np.random.default_rng(123), np.random.Generator(np.random.MT19937(5))
    pcg.random(7), mt.random(3)
    save({"pcg": pcg.bit_generator.state, "mt": mt.bit_generator.state}, tmp_path / "rng")
    state = load(tmp_path / "rng")
    pcg2, mt2 = np.random.default_rng(), np.random.Generator(np.random.MT19937())
    pcg2.bit_generator.state, mt2.bit_generator.state = state["pcg"], state["mt"]
    assert np.array_equal(pcg.random(5), pcg2.random(5)) and np.array_equal(mt.random(5), mt2.random(5))


def test_tensors_come_back_as_tensors_with_dtype_and_requires_grad(tmp_path):
    weight = core.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    state = {"w": weight, "tied": [weight], "steps": core.tensor(np.array([3], dtype=np.int16)),
             "f32": core.tensor(np.array([0.1, 0.2], dtype=np.float32))}
    save(state, tmp_path / "model.ckpt")
    out = load(tmp_path / "model.ckpt")
    assert isinstance(out["w"], core.Tensor) and out["w"].device == "cpu" and out["w"].requires_grad
    assert out["w"].dtype == np.float64 and np.array_equal(out["w"].detach().numpy(), np.arange(6.0).reshape(2, 3))
    assert out["tied"][0] is out["w"]
    assert out["steps"].dtype == np.int16 and not out["steps"].requires_grad
    assert out["f32"].dtype == np.float32 and out["f32"].numpy().tobytes() == state["f32"].numpy().tobytes()
    assert load(tmp_path / "model.ckpt", map_location="cpu")["w"].device == "cpu"


def test_map_location_cuda_without_gpu_is_an_error(tmp_path):
    if core.cupy_available():
        pytest.skip("a GPU is visible")
    save({"w": core.tensor([1.0])}, tmp_path / "c")
    with pytest.raises(RuntimeError, match="cuda"):
        load(tmp_path / "c", map_location="cuda")


@pytest.mark.gpu
def test_cupy_arrays_and_cuda_tensors(tmp_path, gpu_device):
    xp = array_module(gpu_device)
    save({"c": xp.arange(4, dtype=np.float32), "t": core.tensor([1.0, 2.0], device=gpu_device)}, tmp_path / "g")
    out = load(tmp_path / "g", map_location=gpu_device)
    assert isinstance(out["c"], np.ndarray) and out["c"].tolist() == [0, 1, 2, 3]
    assert out["t"].device != "cpu" and out["t"].numpy().tolist() == [1.0, 2.0]


@pytest.mark.parametrize("value, where", [
    ({"a": [1, object()]}, r"obj\['a'\]\[1\]"),
    ({"a": np.array([None, 1], dtype=object)}, r"obj\['a'\].*Python objects"),
    ({"gen": np.random.default_rng(0)}, r"obj\['gen'\].*Generator"),
    ({"nt": collections.namedtuple("P", "x")(1)}, r"obj\['nt'\].*P"),
    ({"a": {np.int64(1): 2}}, r"obj\['a'\]: dict key .* of type int64"),
])
def test_save_refuses_what_load_could_not_read(tmp_path, value, where):
    with pytest.raises(TypeError, match=where):
        save(value, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_file_layout_is_magic_version_length_sha256_payload(tmp_path):
    save({"x": 1}, tmp_path / "c")
    blob = (tmp_path / "c").read_bytes()
    magic, version, length, digest = struct.unpack_from("<8sIQ32s", blob)
    payload = blob[52:]
    assert (magic, version, length) == (b"RLGENCKP", 1, len(payload))
    assert digest == hashlib.sha256(payload).digest()


class FailingFile:
    """Writes half of what it is given, then fails like a full disk."""

    def __init__(self, file):
        self.file = file

    def write(self, data):
        self.file.write(bytes(data)[:len(data) // 2])
        raise OSError("No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.file.close()


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "ckpt"
    save({"version": "old", "w": np.arange(1000)}, path)
    monkeypatch.setattr(serialization, "open", lambda *args: FailingFile(open(*args)), raising=False)
    with pytest.raises(OSError, match="No space"):
        save({"version": "new", "w": np.zeros(1000)}, path)
    monkeypatch.undo()
    assert load(path)["version"] == "old"
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]


@pytest.mark.parametrize("crash_in", ["write", "replace"])
def test_process_killed_mid_save_keeps_the_old_file(tmp_path, crash_in):
    path = tmp_path / "ckpt"
    save({"version": "old"}, path)
    # a real crash: the child process dies with os._exit halfway through the write, or right before the rename
    child = textwrap.dedent(f"""
        import os, numpy as np
        from core import serialization
        class Dying:
            def __init__(self, file): self.file = file
            def write(self, data):
                self.file.write(bytes(data)[:len(data) // 2]); self.file.flush(); os._exit(9)
            def __enter__(self): return self
            def __exit__(self, *a): pass
        if {crash_in!r} == "write":
            serialization.open = lambda *args: Dying(open(*args))
        else:
            serialization.os.replace = lambda *args: os._exit(9)
        serialization.save({{"version": "new", "w": np.zeros(100000)}}, {str(path)!r})
    """)
    result = subprocess.run([sys.executable, "-c", child], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 9, result.stderr
    assert load(path) == {"version": "old"}


@pytest.mark.parametrize("keep", [0, 5, 8, 51, 52, 60, -1])
def test_truncated_file_is_refused(tmp_path, keep):
    path = tmp_path / "ckpt"
    save({"w": np.arange(100.0)}, path)
    blob = path.read_bytes()
    path.write_bytes(blob[:keep] if keep >= 0 else blob[:keep])
    with pytest.raises(CheckpointError, match=r"ckpt.*truncated"):
        load(path)


@pytest.mark.parametrize("offset, message", [
    (0, "not a checkpoint"),  # magic
    (8, "version"),  # format version
    (12, "payload bytes"),  # length field
    (20, "SHA-256"),  # digest
    (52, "SHA-256"),  # first payload byte
    (-1, "SHA-256"),  # last payload byte
])
def test_flipped_byte_is_refused(tmp_path, offset, message):
    path = tmp_path / "ckpt"
    save({"w": np.arange(100.0)}, path)
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 0x01
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match=message) as info:
        load(path)
    assert str(path) in str(info.value)


def test_trailing_bytes_are_refused(tmp_path):
    path = tmp_path / "ckpt"
    save({"w": 1}, path)
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(CheckpointError, match="trailing bytes"):
        load(path)


@pytest.mark.parametrize("content", [
    os.urandom(4096),
    pickle.dumps({"w": [1, 2, 3]}),
    pickle.dumps({"w": [1, 2, 3]})[:20],
    b"",
])
def test_foreign_files_are_refused(tmp_path, content):
    path = tmp_path / "foreign.bin"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"foreign\.bin: (not a checkpoint|truncated)"):
        load(path)


class Exploit:
    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_cannot_run_code(tmp_path):
    exploit = Exploit()
    exploit.marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(checkpoint_bytes(pickle.dumps({"w": exploit}, protocol=5)))
    with pytest.raises(CheckpointError, match=r"evil\.ckpt.*refusing to load global (posix|nt)\.system"):
        load(path)
    assert not exploit.marker.exists()


def test_native_numpy_pickles_are_refused(tmp_path):
    # numpy's own reconstruction path can be abused (a crafted dtype state forges object arrays)
    path = tmp_path / "np.ckpt"
    path.write_bytes(checkpoint_bytes(pickle.dumps({"w": np.arange(3)}, protocol=5)))
    with pytest.raises(CheckpointError, match="refusing to load global numpy"):
        load(path)


@pytest.mark.parametrize("record, message", [
    (serialization._ArrayRecord("|O", (1,), b"\x00" * 8, False), "Python objects"),
    (serialization._ArrayRecord([("a", "|O")], (1,), b"\x00" * 8, False), "Python objects"),
    (serialization._ArrayRecord("<f4", (3,), b"\x00" * 8, False), "needs 12 bytes"),
    (serialization._ArrayRecord("not a dtype", (1,), b"", False), "invalid array record"),
])
def test_forged_array_records_are_refused(tmp_path, record, message):
    path = tmp_path / "forged.ckpt"
    path.write_bytes(checkpoint_bytes(pickle.dumps({"w": record}, protocol=5)))
    with pytest.raises(CheckpointError, match=message):
        load(path)
