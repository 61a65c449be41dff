"""The global random streams a trainer may draw from, for checkpoints."""
import random

import numpy as np

from core.random import default_generator


def get_rng_state():
    """The global random states a trainer may draw from: core's default generator, numpy's legacy
    global state and Python's `random`. Put it in every checkpoint; `set_rng_state` restores it."""
    return {"core": default_generator.get_state(), "numpy_legacy": np.random.get_state(), "python": random.getstate()}


def set_rng_state(state):
    default_generator.set_state(state["core"])
    np.random.set_state(state["numpy_legacy"])
    random.setstate(state["python"])
