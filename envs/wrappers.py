"""Small gymnasium wrappers the factory adds: action repeat, reward scaling, first-reset seeding, GIF recording.

Episode statistics, time limits, Atari preprocessing and frame stacking are gymnasium's own
(RecordEpisodeStatistics, TimeLimit, AtariPreprocessing, FrameStackObservation).
"""

import math
from pathlib import Path

import gymnasium as gym

from core.runtime.logger import save_gif


class ActionRepeat(gym.Wrapper):
    """Repeat each action `repeat` times and return the summed reward; stops early when the episode ends."""

    def __init__(self, env: gym.Env, repeat: int):
        if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
            raise ValueError(f"frame_skip (action repeat) must be a positive int, got {repeat!r}")
        super().__init__(env)
        self.repeat = repeat

    def step(self, action):
        total_reward = 0.0
        for _ in range(self.repeat):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total_reward += reward
            if terminated or truncated:
                break
        return obs, total_reward, terminated, truncated, info


class ScaleReward(gym.RewardWrapper):
    """Multiply every reward by `scale` (a class rather than a lambda so async workers can pickle it)."""

    def __init__(self, env: gym.Env, scale: float):
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise ValueError(f"reward_scale must be a finite number > 0, got {scale!r}")
        super().__init__(env)
        self.scale = float(scale)

    def reward(self, reward):
        return reward * self.scale


class SeedFirstReset(gym.Wrapper):
    """Pass `seed` to the first reset() that comes without one, so a plain `env.reset()` is reproducible.

    `env.reset(seed=s)` still wins; later resets continue the env's random stream as usual.
    """

    def __init__(self, env: gym.Env, seed: int):
        super().__init__(env)
        self.pending_seed = seed

    def reset(self, *, seed=None, options=None):
        seed = self.pending_seed if seed is None else seed
        self.pending_seed = None
        return self.env.reset(seed=seed, options=options)


def capped_cubic_schedule(episode: int) -> bool:
    """Episodes 0, 1, 8, 27, ..., 729, then every 1000th: gymnasium RecordVideo's default trigger."""
    if episode < 1000:
        return round(episode ** (1 / 3)) ** 3 == episode
    return episode % 1000 == 0


class RecordEpisodeGif(gym.Wrapper):
    """Write chosen episodes as animated GIFs `<video_dir>/<name_prefix>-episode-<k>.gif` (Pillow, headless).

    The env must render "rgb_array". GIFs rather than mp4 keep the lab free of moviepy/ffmpeg, and
    TensorBoard and browsers play them; for mp4 wrap the env in gymnasium's RecordVideo yourself.
    Frames stay in memory until the episode ends (an Atari episode of 10k frames is ~1 GB: record
    Atari sparingly). `episode_trigger(k)` picks episodes, counted from 0 at the first reset.
    """

    def __init__(self, env: gym.Env, video_dir, episode_trigger=capped_cubic_schedule,
                 name_prefix: str = "rl-video", fps: float | None = None):
        if env.render_mode != "rgb_array":
            raise ValueError(f"video recording needs render_mode='rgb_array', the env has {env.render_mode!r}")
        super().__init__(env)
        self.video_dir = Path(video_dir)
        self.video_dir.mkdir(parents=True, exist_ok=True)
        self.episode_trigger = episode_trigger
        self.name_prefix = name_prefix
        self.fps = fps or env.metadata.get("render_fps") or 30
        self.episode_id = -1
        self.frames = None  # a list while an episode is being recorded

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._write()  # an episode cut short by reset() is still written
        self.episode_id += 1
        if self.episode_trigger(self.episode_id):
            self.frames = [self.env.render()]
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if self.frames is not None:
            self.frames.append(self.env.render())
            if terminated or truncated:
                self._write()
        return obs, reward, terminated, truncated, info

    def close(self):
        self._write()
        super().close()

    def _write(self):
        if self.frames:
            save_gif(self.frames, self.video_dir / f"{self.name_prefix}-episode-{self.episode_id}.gif", fps=self.fps)
        self.frames = None
