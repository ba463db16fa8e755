"""Shared helpers for the reference-data scripts (timm RepVGG <-> safetensors)."""
import hashlib
import json
import os
import platform
import re

import torch

BN_EPS = 1e-5


def versions():
    import numpy
    import safetensors
    import timm
    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "safetensors": safetensors.__version__,
        "numpy": numpy.__version__,
    }
    try:
        import sklearn
        out["scikit-learn"] = sklearn.__version__
    except ImportError:
        pass
    return out


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def state_dict_clean(sd):
    """Contiguous, detached, unshared CPU copies (safetensors refuses shared storage)."""
    return {k: v.detach().clone().contiguous().cpu() for k, v in sd.items()}


# --------------------------------------------------------------------------------------------
# timm -> official DingXiaoH/RepVGG key renaming
# timm:     stem.* | stages.{i}.{j}.*  conv_kxk.{conv,bn} conv_1x1.{conv,bn} identity.* reparam_conv.*
#           attn.fc1 attn.fc2 head.fc
# official: stage0.* | stage{i+1}.{j}.* rbr_dense.{conv,bn} rbr_1x1.{conv,bn} rbr_identity.* rbr_reparam.*
#           se.down se.up linear
# --------------------------------------------------------------------------------------------
_BLOCK_RULES = [
    ("conv_kxk.", "rbr_dense."),
    ("conv_1x1.", "rbr_1x1."),
    ("identity.", "rbr_identity."),
    ("reparam_conv.", "rbr_reparam."),
    ("attn.fc1.", "se.down."),
    ("attn.fc2.", "se.up."),
]


def timm_key_to_official(k):
    if k.startswith("head.fc."):
        return "linear." + k[len("head.fc."):]
    if k.startswith("stem."):
        prefix, rest = "stage0.", k[len("stem."):]
    else:
        m = re.match(r"^stages\.(\d+)\.(\d+)\.(.*)$", k)
        if not m:
            raise KeyError(f"unmapped timm key {k}")
        prefix, rest = f"stage{int(m.group(1)) + 1}.{m.group(2)}.", m.group(3)
    for a, b in _BLOCK_RULES:
        if rest.startswith(a):
            return prefix + b + rest[len(a):]
    raise KeyError(f"unmapped timm block key {k}")


def to_official(sd):
    out = {timm_key_to_official(k): v for k, v in sd.items()}
    assert len(out) == len(sd)
    return out


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")


def rel(path, root):
    return os.path.relpath(path, root)
