"""The exceptions repvgg raises.

Every one is a :class:`repvgg.Error` and also the built-in exception a Python user would catch
for that kind of problem, so ``except ValueError`` works for a bad input as ``except repvgg.Error``
does. The messages are the ones the ``repvgg`` command-line tool prints.
"""

__all__ = [
    "Error",
    "FileError",
    "CheckpointError",
    "InputError",
    "InputTypeError",
    "DeviceError",
]


class Error(Exception):
    """Base class of every repvgg error."""


class FileError(Error, OSError):
    """A file cannot be read or written (missing, unreadable, a folder that does not exist)."""


class CheckpointError(Error, ValueError):
    """A checkpoint that is not a RepVGG repvgg can load: not safetensors or ``.pth``,
    a pickle outside the tensor allow-list, missing or misshapen keys, a deploy-form file
    asked for its train form."""


class InputError(Error, ValueError):
    """An input of the right type but the wrong value: a batch of another rank or channel
    count, an empty batch, non-finite values, an unknown word (``device="tpu"``), an image
    that cannot be decoded."""


class InputTypeError(Error, TypeError):
    """An input of the wrong type: not a numpy array, or an array of a dtype repvgg does not
    take."""


class DeviceError(Error, RuntimeError):
    """The device cannot run the request: no GPU adapter, ``f16`` on the CPU, an engine
    failure."""
