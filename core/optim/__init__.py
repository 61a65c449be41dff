"""Optimizers over flat parameter buffers, learning-rate schedules and gradient clipping."""
from core.optim import lr_scheduler  # noqa: F401
from core.optim.algorithms import OPTIMIZERS, SGD, Adadelta, Adagrad, Adam, AdamW, Nadam, RMSprop, create  # noqa: F401
from core.optim.clip import clip_grad_norm_, clip_grad_value_  # noqa: F401
from core.optim.optimizer import Optimizer  # noqa: F401
