"""Neural networks: Module and Parameter, layers, losses, ``functional`` and ``init``.

    import gpugrad.nn as nn
    model = nn.MLP([784, 128, 10])
    loss = nn.functional.cross_entropy(model(x), labels)
"""

from . import functional, init, parallel
from .container import ModuleDict, ModuleList, Sequential
from .layers import (
    GELU,
    MLP,
    Dropout,
    Embedding,
    Flatten,
    Identity,
    LayerNorm,
    LeakyReLU,
    Linear,
    LogSoftmax,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Tanh,
)
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss
from .module import IncompatibleKeys, Module
from .parameter import Parameter

__all__ = [
    "functional", "init", "parallel", "Module", "Parameter", "IncompatibleKeys",
    "Sequential", "ModuleList", "ModuleDict",
    "Linear", "Embedding", "LayerNorm", "Dropout", "Flatten", "Identity", "MLP",
    "ReLU", "LeakyReLU", "GELU", "Tanh", "Sigmoid", "SiLU", "Softmax", "LogSoftmax",
    "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "BCEWithLogitsLoss",
]
