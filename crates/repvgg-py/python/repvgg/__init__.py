"""RepVGG in Python without torch at run time: load a timm or official checkpoint
(``.safetensors`` or ``.pth``), fuse it, and run it on the CPU or any GPU that wgpu reaches.

>>> import numpy as np, repvgg
>>> model = repvgg.load("repvgg_a0.pth")            # doctest: +SKIP
>>> runner = model.runner(device="auto")            # doctest: +SKIP
>>> runner.device                                   # doctest: +SKIP
'cpu: ...'
>>> logits = runner(np.zeros((1, 3, 224, 224), np.float32))  # doctest: +SKIP
"""

from ._repvgg import Class, Model, Runner, __version__, digits, load, load_bytes
from ._timm import from_timm
from .errors import (
    CheckpointError,
    DeviceError,
    Error,
    FileError,
    InputError,
    InputTypeError,
)

__all__ = [
    "Class",
    "Model",
    "Runner",
    "__version__",
    "digits",
    "from_timm",
    "load",
    "load_bytes",
    "CheckpointError",
    "DeviceError",
    "Error",
    "FileError",
    "InputError",
    "InputTypeError",
]
