import json
import os
import struct

import numpy as np
import pytest
from PIL import Image

import core
from core.runtime import events
from core.runtime.events import EventFileError, read_run, read_scalars
from core.runtime.logger import RunLogger, make_grid, save_gif


def event_file(run_dir):
    (path,) = events.find_event_files(run_dir)
    return path


def record_spans(blob):
    """(start, end) of each TFRecord, read from the length fields."""
    spans, offset = [], 0
    while offset < len(blob):
        (length,) = struct.unpack_from("<Q", blob, offset)
        spans.append((offset, offset + 16 + length))
        offset += 16 + length
    return spans


def test_scalars_read_back_exactly(tmp_path):
    values = [0.1, np.float32(-2.5), np.array(3.75), np.float64(1e-7), 12345.678, core.tensor(0.3)]
    with RunLogger(tmp_path, quiet=True) as log:
        for step, value in enumerate(values):
            log.scalar("charts/episodic_return", value, np.int64(step * 10))
        log.scalars({"losses/a": 1.0, "losses/b": 2}, step=7)
    scalars = read_scalars(tmp_path)
    assert set(scalars) == {"charts/episodic_return", "losses/a", "losses/b"}
    returns = scalars["charts/episodic_return"]
    assert [step for step, _, _ in returns] == [0, 10, 20, 30, 40, 50]
    # TensorBoard stores scalars as float32
    assert [value for _, _, value in returns] == [float(np.float32(float(v))) for v in values]
    wall_times = [t for _, t, _ in returns]
    assert wall_times == sorted(wall_times)
    assert scalars["losses/a"] == [(7, scalars["losses/a"][0][1], 1.0)]
    assert scalars["losses/b"][0][2] == 2.0


def test_scalar_must_be_one_number(tmp_path):
    with RunLogger(tmp_path, quiet=True) as log:
        with pytest.raises(ValueError, match=r"scalar 'x' must be a single number.*\(2,\)"):
            log.scalar("x", np.array([1.0, 2.0]), 0)


def make_run(run_dir, n=5):
    with RunLogger(run_dir, quiet=True) as log:
        for step in range(n):
            log.scalar("x", float(step), step)
    return event_file(run_dir)


@pytest.mark.parametrize("keep", [1, 8, 10, 12, 20, -4, -1])
def test_truncated_last_record_is_ignored(tmp_path, keep):
    path = make_run(tmp_path)
    blob = path.read_bytes()
    start, end = record_spans(blob)[-1]
    assert end == len(blob) and end - start > 24
    path.write_bytes(blob[:start + keep if keep > 0 else end + keep])  # cut in the header, data or data CRC
    assert [(s, v) for s, _, v in read_scalars(path)["x"]] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0)]


@pytest.mark.parametrize("where", ["data", "length"])
def test_corrupted_record_is_an_error(tmp_path, where):
    path = make_run(tmp_path)
    blob = bytearray(path.read_bytes())
    start, _ = record_spans(bytes(blob))[2]
    blob[start + (14 if where == "data" else 0)] ^= 0x10
    path.write_bytes(bytes(blob))
    with pytest.raises(EventFileError, match=f"{path.name}.*byte {start}"):
        read_scalars(path)


def test_make_grid_layout_and_value_ranges():
    images = np.stack([np.full((1, 2, 3), 0.0), np.full((1, 2, 3), 0.5), np.full((1, 2, 3), 1.0)])
    grid = make_grid(images, nrow=2, padding=1)
    assert grid.shape == (2 * 3 + 1, 2 * 4 + 1, 1) and grid.dtype == np.uint8
    assert (grid[1:3, 1:4] == 0).all() and (grid[1:3, 5:8] == 128).all() and (grid[4:6, 1:4] == 255).all()
    assert (grid[0] == 0).all() and (grid[:, 4] == 0).all() and (grid[4:6, 5:8] == 0).all()
    # a negative value selects [-1, 1]; an explicit range is honoured and clipped
    assert make_grid(-images, padding=0)[0, 0, 0] == 128 and make_grid(-images, padding=0)[0, 3, 0] == 64
    assert make_grid(images, padding=0, value_range=(0, 0.5)).max() == 255
    rgb = make_grid(np.random.default_rng(0).random((5, 3, 4, 4)))
    assert rgb.shape == (2 * 6 + 2, 3 * 6 + 2, 3)  # 5 images: 3 per row, 2 rows of 4 + 2 px cells
    with pytest.raises(ValueError, match="NCHW"):
        make_grid(np.zeros((2, 5, 4, 4)))


def test_image_grid_png_and_event(tmp_path):
    images = np.random.default_rng(1).uniform(-1, 1, (4, 3, 5, 5)).astype(np.float32)
    with RunLogger(tmp_path, quiet=True) as log:
        grid = log.image_grid("samples/fixed", images, step=3, path=tmp_path / "samples" / "000003.png")
    png = np.asarray(Image.open(tmp_path / "samples" / "000003.png"))
    assert png.shape == (2 * 7 + 2, 2 * 7 + 2, 3) and np.array_equal(png, grid)
    expected = np.round((images[3].astype(np.float64) + 1) / 2 * 255).astype(np.uint8).transpose(1, 2, 0)
    assert np.array_equal(grid[9:14, 9:14], expected)
    assert read_run(tmp_path).images == ["samples/fixed"]


def test_text_config_histogram_video_hparams(tmp_path):
    config = {"agent": {"lr": 0.001, "hidden": [64, 64]}, "seed": 3}
    with RunLogger(tmp_path, config=config, quiet=True) as log:
        log.scalar("eval/return_mean", 10.0, 5)
        log.histogram("weights/fc1", np.random.default_rng(0).standard_normal(100), 5)
        frames = np.random.default_rng(0).integers(0, 256, (4, 6, 8, 3), dtype=np.uint8)
        log.video("eval/video", frames, 5, fps=10, path=tmp_path / "video.gif")
        log.hparams({"agent": config["agent"], "seed": np.int64(3), "double": True, "none": None},
                    {"eval/return_mean": 10.0, "time/wall_s": np.float32(2.5)})
    run = read_run(tmp_path)
    yaml_text = "```yaml\nagent:\n  lr: 0.001\n  hidden:\n  - 64\n  - 64\nseed: 3\n```"
    assert run.texts == {"config/text_summary": [(0, yaml_text)]}
    assert run.histograms == ["weights/fc1"] and run.images == ["eval/video"]
    assert run.hparams == {"agent.lr": 0.001, "agent.hidden": "[64, 64]", "seed": 3.0, "double": True, "none": "None"}
    assert run.hparam_metrics == ["eval/return_mean", "time/wall_s"]
    # an already-logged metric is not written again; a new one is logged at the last step
    assert [(s, v) for s, _, v in run.scalars["eval/return_mean"]] == [(5, 10.0)]
    assert [(s, v) for s, _, v in run.scalars["time/wall_s"]] == [(5, 2.5)]
    gif = Image.open(tmp_path / "video.gif")
    assert gif.n_frames == 4 and gif.size == (8, 6)


def test_write_metrics_is_plain_json(tmp_path):
    with RunLogger(tmp_path, quiet=True) as log:
        log.write_metrics({"eval/return_mean": np.float32(1.5), "train/env_steps": np.int64(1000),
                           "gan": {"score": np.array(0.25)}, "name": "ppo"})
        log.write_metrics({"eval/return_mean": 2.0})  # replaces the file
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"eval/return_mean": 2.0}
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_write_metrics_values(tmp_path):
    log = RunLogger(tmp_path, quiet=True, use_tensorboard=False)
    log.write_metrics({"a": np.float32(1.5), "b": np.int64(7), "c": {"d": np.array(0.25)}, "e": "x", "f": [1, 2]})
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"a": 1.5, "b": 7, "c": {"d": 0.25}, "e": "x",
                                                                   "f": [1, 2]}
    assert not any(n.startswith("events.out") for n in os.listdir(tmp_path))


def test_progress_bar(tmp_path, capsys):
    with RunLogger(tmp_path, quiet=True, use_tensorboard=False) as log:
        bar = log.progress(10, "train")
        assert bar.disable
        bar.update(5)
        bar.set_postfix(ret=np.float32(1.0))
        bar.close()
    assert capsys.readouterr().err == ""
    bar = RunLogger(tmp_path, use_tensorboard=False).progress(10, "train")
    bar.update(4)
    bar.set_postfix(ret=np.array(12.3456), sps=core.tensor(100.0), phase="eval")
    assert bar.postfix == "ret=12.35, sps=100, phase=eval"
    bar.close()


def test_save_gif_from_arrays_and_png_files(tmp_path):
    frames = [np.full((4, 5, 3), v, dtype=np.uint8) for v in (0, 128, 255)]
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(tmp_path / f"{i}.png")
    save_gif(np.stack(frames), tmp_path / "a.gif", fps=5)
    save_gif([tmp_path / f"{i}.png" for i in range(3)], tmp_path / "b.gif", fps=5)
    for name in ("a.gif", "b.gif"):
        gif = Image.open(tmp_path / name)
        assert gif.n_frames == 3 and gif.info["duration"] == 200
        gif.seek(1)
        assert np.asarray(gif.convert("RGB"))[0, 0].tolist() == [128, 128, 128]


def test_second_logger_on_a_run_dir_keeps_the_first_file(tmp_path):
    for step in range(2):  # e.g. training, then evaluation, within the same second
        with RunLogger(tmp_path, quiet=True) as log:
            log.scalar("x", float(step), step)
    assert len(events.find_event_files(tmp_path)) == 2
    assert [(s, v) for s, _, v in read_scalars(tmp_path)["x"]] == [(0, 0.0), (1, 1.0)]


def test_event_files_are_found_recursively(tmp_path):
    make_run(tmp_path / "a")
    make_run(tmp_path / "b" / "c")
    assert [p.parent.name for p in events.find_event_files(tmp_path)] == ["a", "c"]
