"""``repvgg.from_timm``: a model from a torch module or state_dict in memory, no file."""

import json
import struct

import numpy as np

from ._repvgg import load_bytes

# numpy dtype -> safetensors dtype name.
_DTYPES = {
    np.dtype(np.float32): "F32",
    np.dtype(np.float16): "F16",
    np.dtype(np.float64): "F64",
    np.dtype(np.int64): "I64",
    np.dtype(np.int32): "I32",
    np.dtype(np.uint8): "U8",
    np.dtype(np.bool_): "BOOL",
}


def _to_numpy(name, value):
    if isinstance(value, np.ndarray):
        return value
    # A torch.Tensor, without importing torch: bfloat16 has no numpy dtype, so it goes to f32.
    tensor = value.detach().cpu()
    if str(tensor.dtype) == "torch.bfloat16":
        tensor = tensor.float()
    try:
        return tensor.contiguous().numpy()
    except Exception as e:  # noqa: BLE001 - re-raised with the key's name
        raise TypeError(f"from_timm: tensor {name!r} cannot become a numpy array: {e}") from e


def _safetensors(state):
    header = {}
    blobs = []
    offset = 0
    for name, value in state.items():
        if name.endswith("num_batches_tracked"):
            continue
        arr = np.ascontiguousarray(_to_numpy(name, value))
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        dtype = _DTYPES.get(arr.dtype.newbyteorder("="))
        if dtype is None:
            raise TypeError(f"from_timm: tensor {name!r} has dtype {arr.dtype}, which a checkpoint cannot hold")
        data = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(blobs)


def from_timm(module_or_state_dict, name="<timm module>"):
    """A :class:`repvgg.Model` from a timm (or official DingXiaoH) RepVGG ``torch.nn.Module``
    or its ``state_dict()``, in memory: the tensors are copied once and checked as a checkpoint
    file's would be. torch is needed only to hand the module over, not by repvgg."""
    state = module_or_state_dict
    if hasattr(state, "state_dict") and callable(state.state_dict):
        state = state.state_dict()
    if not hasattr(state, "items"):
        raise TypeError(
            f"from_timm: expected a torch.nn.Module or a state_dict mapping, found {type(module_or_state_dict).__name__}"
        )
    return load_bytes(_safetensors(state), name)
