"""Run logging: TensorBoard event files (tensorboardX), metrics.json, image grids, GIFs, progress bars.

    log = RunLogger(run_dir, config=cfg, quiet=False)
    log.scalar("charts/episodic_return", ret, step)
    log.image_grid("samples/fixed_noise", fake_nchw, step, path=run_dir / "samples" / f"{step:06d}.png")
    bar = log.progress(total_steps, "train"); bar.update(n); bar.set_postfix(ret=ret)
    log.hparams(flat_config, {"eval/return_mean": mean}); log.write_metrics({...}); log.close()

Values may be Python numbers, numpy scalars, 0-d arrays, cupy arrays or core Tensors.
"""
import contextlib
import io
import json
import math
import os
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from core.backend import to_number, to_numpy
from core.serialization import atomic_write


def make_grid(images, nrow=None, padding=2, value_range="auto"):
    """Tile NCHW images into one HWC uint8 grid (C is 1, 3 or 4), `nrow` images per row
    (default: a square-ish grid), `padding` black pixels around each image.

    value_range: (low, high) of the input, mapped to 0..255 and clipped; "auto" takes (-1, 1)
    when any value is negative (tanh outputs) and (0, 1) otherwise; uint8 input is used as is.
    """
    images = to_numpy(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3, 4):
        raise ValueError(f"images must be NCHW with 1, 3 or 4 channels, got shape {images.shape}")
    if images.dtype != np.uint8:
        low, high = ((-1.0, 1.0) if images.min() < 0 else (0.0, 1.0)) if value_range == "auto" else value_range
        images = np.clip((images.astype(np.float64) - low) / (high - low), 0.0, 1.0)
        images = np.round(images * 255.0).astype(np.uint8)
    n, channels, height, width = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    ncol = math.ceil(n / nrow)
    cell_h, cell_w = height + padding, width + padding
    grid = np.zeros((ncol * cell_h + padding, nrow * cell_w + padding, channels), dtype=np.uint8)
    for i, image in enumerate(images):
        top, left = (i // nrow) * cell_h + padding, (i % nrow) * cell_w + padding
        grid[top:top + height, left:left + width] = image.transpose(1, 2, 0)
    return grid


def _pil_image(array):
    from PIL import Image
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]  # PIL wants HxW for grayscale
    if array.dtype != np.uint8 or array.ndim not in (2, 3):
        raise ValueError(f"an image must be HxW or HxWxC uint8, got shape {array.shape} and dtype {array.dtype}")
    return Image.fromarray(array)


def save_png(image, path):
    """Write an HWC (or HW) uint8 image to `path` as PNG, atomically."""
    buffer = io.BytesIO()
    _pil_image(image).save(buffer, format="PNG")
    _write_file(path, buffer.getvalue())


def _gif_bytes(frames, fps):
    from PIL import Image
    images = [Image.open(frame).convert("RGB") if isinstance(frame, (str, os.PathLike)) else _pil_image(frame)
              for frame in frames]
    if not images:
        raise ValueError("a GIF needs at least one frame")
    buffer = io.BytesIO()
    # GIF delays are in 1/100 s; loop=0 repeats forever
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(10, round(1000 / fps)), loop=0)
    return buffer.getvalue()


def save_gif(frames, path, fps=10):
    """Write an animated GIF from a TxHxWxC uint8 array or a list of HxWxC uint8 arrays / image
    file paths (e.g. the PNG sample grids of each epoch). Returns `path`."""
    _write_file(path, _gif_bytes(frames, fps))
    return path


def _write_file(path, data):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)


def flatten_config(config, prefix=""):
    """{"optim": {"lr": 1e-3}} -> {"optim.lr": 1e-3}; OmegaConf configs are resolved first."""
    if hasattr(config, "_metadata"):  # OmegaConf DictConfig, without importing omegaconf in core
        from omegaconf import OmegaConf
        config = OmegaConf.to_container(config, resolve=True)
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def _hparam_value(value):
    """HParams accepts bool, number or string: everything else becomes its text."""
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, (np.generic, np.ndarray)) and np.ndim(value) == 0:
        return _hparam_value(value.item())
    return str(value)


class _ProgressBar(tqdm):
    """tqdm whose `set_postfix` accepts arrays/Tensors and does not redraw on every call
    (the bar redraws on `update`, at most every `mininterval` seconds)."""

    def set_postfix(self, ordered_dict=None, refresh=False, **metrics):
        if self.disable:  # skip the conversions (a cupy value would sync the GPU)
            return
        metrics.update(ordered_dict or {})
        shown = {}
        for name, value in metrics.items():
            value = value if isinstance(value, str) else to_number(value, f"progress metric {name!r}")
            shown[name] = f"{value:.4g}" if isinstance(value, float) else value
        super().set_postfix(shown, refresh=refresh)


def _summary_writer(logdir, flush_secs, filename_suffix):
    """tensorboardX's SummaryWriter, writing its events in the caller's thread.

    tensorboardX queues events for a background thread; when a write fails (disk full) that thread
    dies, the bounded queue fills up and the next log call blocks forever, past Ctrl-C and SIGTERM.
    Written here, the OSError reaches the training loop at the call that failed."""
    from tensorboardX import FileWriter, SummaryWriter
    from tensorboardX.event_file_writer import EventsWriter

    class EventWriter:  # what FileWriter needs of its event writer
        def __init__(self):
            self._events = EventsWriter(os.path.join(str(logdir), "events"), filename_suffix)
            self._next_flush = time.monotonic() + flush_secs
            self._closed = False

        def get_logdir(self):
            return str(logdir)

        def add_event(self, event):
            if self._closed:
                return
            with self._naming_the_file():
                self._events.write_event(event)
            if time.monotonic() >= self._next_flush:
                self.flush()

        def flush(self):
            if not self._closed:
                with self._naming_the_file():
                    self._events.flush()
                self._next_flush = time.monotonic() + flush_secs

        def close(self):
            if not self._closed:
                self._closed = True
                with self._naming_the_file():
                    self._events.close()

        @contextlib.contextmanager
        def _naming_the_file(self):
            try:
                yield
            except OSError as e:
                raise OSError(e.errno, e.strerror, self._events._file_name) from e

        def reopen(self):
            pass

    class SyncFileWriter(FileWriter):
        def __init__(self, logdir, **_):  # FileWriter's own __init__ would start the thread
            self.event_writer = EventWriter()
            self._default_metadata = {}

    class SyncSummaryWriter(SummaryWriter):
        def _get_file_writer(self):
            if self.file_writer is None:
                self.file_writer = SyncFileWriter(self.logdir)
                self.all_writers = {self.file_writer.get_logdir(): self.file_writer}
            return self.file_writer

    return SyncSummaryWriter(logdir=str(logdir), flush_secs=flush_secs, filename_suffix=filename_suffix)


class Closeable:
    """`with obj:` closes obj at the end of the block (RunLogger, Run)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class RunLogger(Closeable):
    """TensorBoard logging into `run_dir`, plus metrics.json, image files and a progress bar.

    config: logged once as YAML text under the tag "config". quiet: no progress bars (multirun
    jobs). use_tensorboard=False: no event files (the TensorBoard methods do nothing), while
    files (metrics.json, PNG/GIF paths) are still written.
    """

    def __init__(self, run_dir, config=None, quiet=False, use_tensorboard=True):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.quiet = quiet
        self.last_step = 0
        self.latest = {}  # tag -> the newest value logged (the run summary and the session's console line)
        self._writer = None
        if use_tensorboard:
            # tensorboardX names files by the second and opens them with "wb": the suffix keeps a
            # second logger on the same directory (resume, evaluation) from erasing the first file
            self._writer = _summary_writer(self.run_dir, flush_secs=30, filename_suffix=f".{time.time_ns()}")
        if config is not None:
            self.text("config", _config_yaml(config))

    def _step(self, step):
        step = int(step)
        self.last_step = max(self.last_step, step)
        return step

    def scalar(self, tag, value, step):
        value, step = float(to_number(value, f"scalar {tag!r}")), self._step(step)
        self.latest[tag] = value
        if self._writer is not None:
            self._writer.add_scalar(tag, value, step)

    def scalars(self, values, step):
        """Log each {tag: value} at the same step."""
        for tag, value in values.items():
            self.scalar(tag, value, step)

    @property
    def scalar_tags(self):
        """Every scalar tag logged so far."""
        return self.latest.keys()

    def histogram(self, tag, values, step):
        if self._writer is not None:
            self._writer.add_histogram(tag, to_numpy(values).astype(np.float64).ravel(), self._step(step))

    def image_grid(self, tag, images, step, nrow=None, path=None, value_range="auto"):
        """Log NCHW images as one grid image (see `make_grid`); also write it as PNG when
        `path` is given. Returns the HWC uint8 grid."""
        grid = make_grid(images, nrow=nrow, value_range=value_range)
        buffer = io.BytesIO()
        _pil_image(grid).save(buffer, format="PNG")
        if path is not None:
            _write_file(path, buffer.getvalue())
        self._add_image(tag, buffer.getvalue(), grid.shape, step)
        return grid

    def video(self, tag, frames, step, fps=30, path=None):
        """Log TxHxWxC uint8 frames as an animated GIF (TensorBoard's Images tab plays it);
        also write the GIF to `path` when given."""
        frames = to_numpy(frames)
        if frames.ndim != 4 or frames.dtype != np.uint8:
            raise ValueError(f"video frames must be TxHxWxC uint8, got shape {frames.shape} and dtype {frames.dtype}")
        gif = _gif_bytes(frames, fps)
        if path is not None:
            _write_file(path, gif)
        self._add_image(tag, gif, frames.shape[1:], step)

    def _add_image(self, tag, encoded, shape, step):
        if self._writer is None:
            return
        from tensorboardX.proto.summary_pb2 import Summary
        height, width, channels = shape
        image = Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=encoded)
        self._writer.file_writer.add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), self._step(step))

    def text(self, tag, text, step=0):
        """Log markdown text (TensorBoard stores it under "<tag>/text_summary")."""
        if self._writer is not None:
            self._writer.add_text(tag, str(text), self._step(step))

    def hparams(self, hparam_dict, metric_dict):
        """Record this run for TensorBoard's HParams view: nested hyperparameters are flattened
        to "a.b" names with bool/number/string values; each metric is a scalar tag whose last
        value the view shows. Metrics not yet logged as scalars are logged now at the last step."""
        if self._writer is None:
            return
        from tensorboardX.summary import hparams as hparams_summaries
        hparams = {name: _hparam_value(value) for name, value in flatten_config(hparam_dict).items()}
        metrics = {tag: float(to_number(value, f"metric {tag!r}")) for tag, value in metric_dict.items()}
        # written into this run's own event file (tensorboardX's add_hparams would start a sub-run)
        for summary in hparams_summaries(hparams, metrics):
            self._writer.file_writer.add_summary(summary, self.last_step)
        for tag, value in metrics.items():
            if tag not in self.scalar_tags:
                self.scalar(tag, value, self.last_step)

    def write_metrics(self, metrics):
        """Write `metrics` (nested dict of numbers/strings) to run_dir/metrics.json atomically."""
        def plain(value):
            if isinstance(value, dict):
                return {str(k): plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value if isinstance(value, (str, type(None))) else to_number(value)
        text = json.dumps(plain(metrics), indent=2, sort_keys=True)
        atomic_write(self.run_dir / "metrics.json", (text + "\n").encode())

    def progress(self, total, desc=None):
        """A tqdm progress bar (silent when quiet); `bar.set_postfix(name=value, ...)` shows live metrics."""
        return _ProgressBar(total=total, desc=desc, disable=self.quiet, dynamic_ncols=True, leave=True)

    def console(self, line):
        """One line for the user (training progress, a prerequisite being prepared), printed above
        the progress bar; silent when quiet (multirun jobs, `quiet=true`)."""
        if not self.quiet:
            tqdm.write(line)

    def flush(self):
        if self._writer is not None:
            self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _config_yaml(config):
    if hasattr(config, "_metadata"):
        from omegaconf import OmegaConf
        text = OmegaConf.to_yaml(config, resolve=True)
    elif isinstance(config, str):
        text = config
    else:
        import yaml
        text = yaml.safe_dump(config, sort_keys=False)
    return f"```yaml\n{text}```"  # fenced so TensorBoard's markdown keeps the layout
