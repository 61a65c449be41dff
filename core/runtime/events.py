"""Read back the TensorBoard event files that tensorboardX writes, with tensorboardX's own parts:
its `Event` protobuf classes and its masked CRC-32C (native code from the `crc32c` package, a
dependency, else tensorboardX's pure-Python fallback). No TensorFlow or TensorBoard needed.

An event file is a sequence of TFRecords:

    uint64 length | uint32 masked crc32c(length bytes) | data | uint32 masked crc32c(data)

where data is a serialized `Event`. Both checksums are verified. A record cut short at the end of
the file (a run killed mid-write) is dropped silently; a record whose checksum does not match is
corruption and raises `EventFileError`. (TensorBoard's own loader stops quietly at either, so a
corrupted file would look like a short run.)

Scalars come back as `{tag: [(step, wall_time, value), ...]}` in file order; tensorboardX
stores scalar values as float32, so `value` equals `float(numpy.float32(logged_value))`.
"""
import dataclasses
import struct
from pathlib import Path

from google.protobuf.json_format import MessageToDict
from tensorboardX.proto.event_pb2 import Event
from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData
from tensorboardX.record_writer import masked_crc32c


class EventFileError(ValueError):
    """An event file whose content is corrupted (not merely truncated at the end)."""


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
    data = HParamsPluginData.FromString(content)
    if data.HasField("session_start_info"):
        for name, value in data.session_start_info.hparams.items():
            hparams[name] = MessageToDict(value)  # google.protobuf.Value -> str, float, bool or None
    if data.HasField("experiment"):
        metrics.extend(info.name.tag for info in data.experiment.metric_infos)

