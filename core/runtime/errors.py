"""The errors a run reports in one line (scripts/train.py turns them into `error: ...` and an exit status)."""


class ConfigError(ValueError):
    """A configuration that turns out not to work once the run starts (e.g. an env whose action
    space the agent cannot handle): reported in one line, like a bad override."""


class NonFiniteError(FloatingPointError):
    """A loss or a state to be saved is NaN or infinite: training stops, the last good checkpoint stays."""
