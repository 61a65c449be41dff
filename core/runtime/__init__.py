"""The lab's run machinery, below envs/agents/gans and above the tensor library: run directories,
checkpoints, logging, the training session. It imports the tensor library; the tensor library never imports it."""
from core.runtime.errors import ConfigError, NonFiniteError  # noqa: F401
