"""Type stubs of the extension module ``repvgg._repvgg`` (re-exported by ``repvgg``)."""

import os
from typing import Literal, Sequence, Union, overload

import numpy as np
import numpy.typing as npt

_Path = Union[str, "os.PathLike[str]"]
_Image = Union[_Path, npt.NDArray[np.uint8]]

__version__: str

class Class:
    """One of an image's top classes."""

    @property
    def index(self) -> int: ...
    @property
    def label(self) -> str: ...
    @property
    def short_label(self) -> str: ...
    @property
    def prob(self) -> float: ...

class Runner:
    """One form of one model prepared on one device; ``runner(x)`` runs a batch."""

    @property
    def device(self) -> str:
        """Which device runs the model and why, one line."""
    @property
    def adapter(self) -> str: ...
    @property
    def form(self) -> Literal["deploy", "train"]: ...
    @property
    def precision(self) -> Literal["f32", "f16", "int8", "bf16"]: ...
    @property
    def num_classes(self) -> int: ...
    def __call__(self, x: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
        """Logits ``[N, classes]`` of a float32 (or float64, copied) ``[N, C, H, W]`` batch."""
    @overload
    def run(
        self, x: npt.NDArray[np.floating], features: Literal[False] = False
    ) -> npt.NDArray[np.float32]: ...
    @overload
    def run(
        self, x: npt.NDArray[np.floating], features: Literal[True]
    ) -> dict[str, npt.NDArray[np.float32]]: ...
    def classify(
        self, images: Union[Sequence[_Image], npt.NDArray[np.uint8]], top: int = 5
    ) -> list[list[Class]]:
        """The ``top`` classes of each image, with timm's preprocessing of the variant."""

class Model:
    """A RepVGG model in train (multi-branch) or deploy (fused) form."""

    @property
    def arch(self) -> str: ...
    @property
    def num_classes(self) -> int: ...
    @property
    def form(self) -> Literal["train", "deploy"]: ...
    @property
    def in_channels(self) -> int: ...
    @property
    def naming(self) -> Literal["timm", "official"]: ...
    @property
    def path(self) -> Union[str, None]: ...
    def fuse(self) -> Model: ...
    def save(self, path: _Path, naming: Literal["timm", "official"] = "timm") -> None: ...
    def export_onnx(self, path: _Path, opset: int = 17) -> None: ...
    def runner(
        self,
        device: str = "auto",
        precision: Literal["f32", "f16", "int8", "bf16"] = "f32",
        threads: Union[int, None] = None,
        form: Literal["deploy", "train"] = "deploy",
    ) -> Runner:
        """``device``: ``"auto"``, ``"cpu"``, ``"gpu"`` or ``"gpu:NAME"``."""

def load(path: _Path) -> Model:
    """Loads ``.safetensors`` or ``.pth``/``.pt``, timm or official naming, either form."""

def load_bytes(data: bytes, name: str = "<bytes>") -> Model: ...
def digits() -> Model:
    """The embedded 8x8 handwritten-digits model."""
