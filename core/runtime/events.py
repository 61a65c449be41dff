"""Read TensorBoard event files (as written by tensorboardX) without TensorFlow or TensorBoard.

An event file is a sequence of TFRecords:

    uint64 length | uint32 masked crc32c(length bytes) | data | uint32 masked crc32c(data)

where data is a serialized `Event` protobuf. Both checksums are verified. A record cut short at
the end of the file (a run killed mid-write) is dropped silently; a record whose checksum does
not match is corruption and raises `EventFileError`.

Scalars come back as `{tag: [(step, wall_time, value), ...]}` in file order; tensorboardX
stores scalar values as float32, so `value` equals `float(numpy.float32(logged_value))`.
"""
import dataclasses
import struct
from pathlib import Path

import numpy as np


class EventFileError(ValueError):
    """An event file whose content is corrupted (not merely truncated at the end)."""


def _crc32c_table():
    # Castagnoli polynomial 0x1EDC6F41, bit-reversed as the CRC is computed LSB first
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _crc32c_table()
_NUMPY_MIN_BYTES = 1024  # below this the per-call numpy overhead beats the plain loop


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data`."""
    if len(data) >= _NUMPY_MIN_BYTES:
        return _crc32c_numpy(data)
    table = _CRC32C_TABLE
    crc = 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# Large records (image summaries) use the CRC's linearity over GF(2) to run in numpy:
#   crc0(A + B) = shift(crc0(A), len(B)) ^ crc0(B)
# where crc0 starts from a zero register and shift(c, n) feeds n zero bytes into register c.
# Each 8-byte block's crc0 is a XOR of 8 lookups ("slicing-by-8" tables); blocks are then merged
# pairwise, level by level, with shift tables for 8 * 2**level zero bytes.

_TABLE = np.array(_CRC32C_TABLE, dtype=np.uint32)


def _shift_one_byte(crc):
    return _TABLE[crc & 0xFF] ^ (crc >> 8)


def _slicing_tables():
    tables = [_TABLE]  # tables[k][x]: register after byte x followed by k zero bytes
    for _ in range(7):
        tables.append(_shift_one_byte(tables[-1]))
    return np.stack(tables)


_SLICING = _slicing_tables()
_BITS = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(bool)  # _BITS[x, i]: bit i of byte x
_ZERO_SHIFTS = []  # per level: (4, 256) tables, register byte j = x -> register after 8 * 2**level zeros


def _apply_shift(tables, crc):
    return tables[0][crc & 0xFF] ^ tables[1][(crc >> 8) & 0xFF] ^ tables[2][(crc >> 16) & 0xFF] ^ tables[3][crc >> 24]


def _zero_shift(level):
    while len(_ZERO_SHIFTS) <= level:
        basis = np.uint32(1) << np.arange(32, dtype=np.uint32)
        if _ZERO_SHIFTS:
            images = _apply_shift(_ZERO_SHIFTS[-1], _apply_shift(_ZERO_SHIFTS[-1], basis))
        else:
            images = basis
            for _ in range(8):
                images = _shift_one_byte(images)
        # linearity: the image of byte x in register byte j is the XOR of its set bits' images
        _ZERO_SHIFTS.append(np.stack([np.bitwise_xor.reduce(np.where(_BITS, images[8 * j:8 * j + 8], 0), axis=1)
                                      for j in range(4)]).astype(np.uint32))
    return _ZERO_SHIFTS[level]


def _crc32c_numpy(data):
    levels = (-(-len(data) // 8) - 1).bit_length()
    padded = np.zeros(8 << levels, dtype=np.uint8)  # leading zeros leave a zero register unchanged
    start = len(padded) - len(data)
    padded[start:] = np.frombuffer(data, dtype=np.uint8)
    padded[start:start + 4] ^= 0xFF  # the initial register 0xFFFFFFFF, folded into the first 4 bytes
    blocks = padded.reshape(-1, 8)
    crc = _SLICING[7][blocks[:, 0]]
    for k in range(1, 8):
        crc = crc ^ _SLICING[7 - k][blocks[:, k]]
    for level in range(levels):
        crc = _apply_shift(_zero_shift(level), crc[0::2]) ^ crc[1::2]
    return int(crc[0]) ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masking: rotate right by 15 and add a constant (so CRCs of CRCs stay strong)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path):
    """Yield the data of every complete TFRecord in `path`, checksums verified."""
    blob = Path(path).read_bytes()
    offset = 0
    while offset + 12 <= len(blob):
        header = blob[offset:offset + 8]
        (length,), (length_crc,) = struct.unpack("<Q", header), struct.unpack_from("<I", blob, offset + 8)
        if masked_crc32c(header) != length_crc:
            raise EventFileError(f"{path}: corrupted record header at byte {offset} (length checksum mismatch)")
        start, end = offset + 12, offset + 12 + length
        if end + 4 > len(blob):
            return  # the writer was killed mid-record
        data = blob[start:end]
        if masked_crc32c(data) != struct.unpack_from("<I", blob, end)[0]:
            raise EventFileError(f"{path}: corrupted record at byte {offset} (data checksum mismatch)")
        yield data
        offset = end + 4


def read_events(path):
    """Yield the `Event` protobufs of one event file."""
    from tensorboardX.proto.event_pb2 import Event
    for data in read_records(path):
        yield Event.FromString(data)


@dataclasses.dataclass
class RunEvents:
    """What one run (a directory of event files, or one file) holds.

    scalars:        {tag: [(step, wall_time, value), ...]}
    texts:          {tag: [(step, text), ...]} (tensorboardX appends "/text_summary" to text tags)
    images:         sorted image tags (videos are images too: animated GIFs)
    histograms:     sorted histogram tags
    hparams:        the hyperparameters of the session start, {name: value}
    hparam_metrics: the metric tags the HParams view compares
    """
    scalars: dict = dataclasses.field(default_factory=dict)
    texts: dict = dataclasses.field(default_factory=dict)
    images: list = dataclasses.field(default_factory=list)
    histograms: list = dataclasses.field(default_factory=list)
    hparams: dict = dataclasses.field(default_factory=dict)
    hparam_metrics: list = dataclasses.field(default_factory=list)


def is_event_file(path) -> bool:
    return Path(path).name.startswith("events.out.tfevents.")


def find_event_files(root):
    """All event files under `root` (recursively), sorted by path."""
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(p for p in root.rglob("events.out.tfevents.*") if p.is_file())


def read_run(path) -> RunEvents:
    """Read one event file, or every event file directly inside a run directory (in name order,
    i.e. in order of creation); subdirectories are other runs, as in TensorBoard."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and is_event_file(p))
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"no event file or run directory at {path}")
    run = RunEvents()
    images, histograms, metrics = set(), set(), []
    for file in files:
        for event in read_events(file):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                kind = value.WhichOneof("value")
                if kind == "simple_value":
                    run.scalars.setdefault(value.tag, []).append((event.step, event.wall_time, value.simple_value))
                elif kind == "image":
                    images.add(value.tag)
                elif kind == "histo":
                    histograms.add(value.tag)
                elif plugin == "text":
                    text = b"".join(value.tensor.string_val).decode("utf-8")
                    run.texts.setdefault(value.tag, []).append((event.step, text))
                elif plugin == "hparams":
                    _read_hparams(value.metadata.plugin_data.content, run.hparams, metrics)
    run.images, run.histograms = sorted(images), sorted(histograms)
    run.hparam_metrics = list(dict.fromkeys(metrics))
    return run


def read_scalars(path):
    """`{tag: [(step, wall_time, value), ...]}` of a run directory or one event file."""
    return read_run(path).scalars


def _read_hparams(content, hparams, metrics):
    from google.protobuf.json_format import MessageToDict
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData
    data = HParamsPluginData.FromString(content)
    if data.HasField("session_start_info"):
        for name, value in data.session_start_info.hparams.items():
            hparams[name] = MessageToDict(value)  # google.protobuf.Value -> str, float, bool or None
    if data.HasField("experiment"):
        metrics.extend(info.name.tag for info in data.experiment.metric_infos)

