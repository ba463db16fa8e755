"""Shared helpers: the repository's fixtures, a numpy-only safetensors reader, and the `repvgg`
binary (the Rust results every Python result is compared with)."""

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures"

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "U8": np.uint8}


def read_safetensors(path):
    """Every tensor of a safetensors file as a numpy array (bf16 widened to float32)."""
    data = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    body = data[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        raw = body[start:end]
        if info["dtype"] == "BF16":
            arr = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<"))
        out[name] = arr.reshape(info["shape"]).copy()
    return out


def write_input(path, x):
    """A safetensors file holding one float32 tensor `input`, for `repvgg infer`."""
    x = np.ascontiguousarray(x, dtype="<f4")
    head = json.dumps({"input": {"dtype": "F32", "shape": list(x.shape), "data_offsets": [0, x.nbytes]}}).encode()
    head += b" " * (-len(head) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(head)) + head + x.tobytes())


def manifest():
    return json.loads((FIXTURES / "manifest.json").read_text())


@pytest.fixture(scope="session")
def repvgg_bin():
    """The `repvgg` binary: $REPVGG_BIN, else the workspace's debug or release build, else one
    built now with cargo."""
    env = os.environ.get("REPVGG_BIN")
    if env:
        return Path(env)
    for profile in ("debug", "release"):
        p = ROOT / "target" / profile / "repvgg"
        if p.exists():
            return p
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.fail("no repvgg binary: set REPVGG_BIN or build it with `cargo build -p repvgg-cli`")
    subprocess.run([cargo, "build", "-p", "repvgg-cli"], cwd=ROOT, check=True)
    return ROOT / "target" / "debug" / "repvgg"


class Cli:
    def __init__(self, binary, tmp):
        self.binary = binary
        self.tmp = tmp

    def run(self, *args, check=True):
        r = subprocess.run([str(self.binary), *map(str, args)], capture_output=True, text=True)
        if check and r.returncode != 0:
            raise AssertionError(f"repvgg {' '.join(map(str, args))} failed: {r.stderr}")
        return r

    def infer(self, weights, x, form="deploy", device="cpu", precision="f32", features=False):
        """`repvgg infer` of `x`: the file's tensors (logits, stage0..)."""
        inp = self.tmp / "cli_input.safetensors"
        out = self.tmp / "cli_output.safetensors"
        write_input(inp, x)
        args = ["infer", "--weights", weights, "--input", inp, "--output", out, "--form", form, "--device", device, "--precision", precision]
        if features:
            args.append("--features")
        self.run(*args)
        return read_safetensors(out)

    def error(self, *args):
        """The one-line message `repvgg` prints for a failing command, without `error: `."""
        r = self.run(*args, check=False)
        assert r.returncode != 0, f"repvgg {args} succeeded"
        line = r.stderr.strip().splitlines()[-1]
        assert line.startswith("error: "), r.stderr
        return line[len("error: ") :]


@pytest.fixture
def cli(repvgg_bin, tmp_path):
    return Cli(repvgg_bin, tmp_path)
