"""Optimizers (SGD, Adam, AdamW) and learning-rate schedulers; updates run off the tape, in place."""

from . import lr_scheduler
from .adam import Adam, AdamW
from .functional import adam_update, sgd_update
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "lr_scheduler", "sgd_update", "adam_update"]
