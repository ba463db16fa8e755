#!/usr/bin/env python3
"""Write small PyTorch `.pth` fixtures (tests/fixtures/pth/) from the committed safetensors fixtures.

Every valid file holds exactly the tensors of one `tests/fixtures/*.safetensors` file (same names
after unwrapping / prefix stripping, same dtype, same bits), saved with `torch.save` in the layouts
training code writes: a bare state_dict (an OrderedDict carrying `_metadata`, as
`model.state_dict()` returns), a `module.` prefix (DataParallel), `{'model': ...}` and
`{'state_dict': ...}` wrappers with other entries beside them, f16 / bf16 storages, views
(tensors sharing one storage at offsets, non-contiguous strides) and the legacy non-zip format.

The hostile files must be rejected by a safe loader without running anything:
  evil_system.pth     a `__reduce__` to os.system (pickle global `posix.system`)
  evil_global.pth     a state_dict next to an `argparse.Namespace` (an unknown global)
  truncated.pth       the first half of a valid file (a truncated zip)
  bad_offset.pth      a tensor whose storage offset lies past the end of its storage
  bad_numel.pth       a storage that claims 2**40 elements (a huge allocation if believed)

Deterministic: no RNG (the tensors come from the committed fixtures); `torch.save` zip output only
depends on the torch version (pinned in requirements.txt) and regenerates byte for byte. The legacy
file does not: its storage keys are object ids, different on every run (same tensors). Usage, from the repository root:

    $HOME/ref-venv/bin/python scripts/ref/gen_pth_fixtures.py [--out tests/fixtures/pth]
"""
import argparse
import collections
import io
import json
import os
import pickletools
import struct
import sys
import zipfile

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import sha256, versions, write_json  # noqa: E402

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FIX = os.path.join(REPO_ROOT, "tests", "fixtures")
MARKER = "/tmp/repvgg_pth_pwned"


def state_dict(path):
    """An OrderedDict with `_metadata`, like nn.Module.state_dict() (pickled with a BUILD)."""
    sd = collections.OrderedDict(sorted(load_file(path).items()))
    sd._metadata = collections.OrderedDict([("", {"version": 1})])
    return sd


def prefixed(sd, prefix="module."):
    out = collections.OrderedDict((prefix + k, v) for k, v in sd.items())
    out._metadata = sd._metadata
    return out


def as_views(sd):
    """Same values, stored as views: every 1-D tensor is a slice of one shared flat storage
    (storage offsets), every 4-D weight a permuted copy permuted back (non-contiguous strides)."""
    out = collections.OrderedDict()
    ones = [(k, v) for k, v in sd.items() if v.dim() == 1 and v.dtype == torch.float32]
    flat = torch.cat([v for _, v in ones]) if ones else None
    off = 0
    for k, v in sd.items():
        if v.dim() == 1 and v.dtype == torch.float32:
            out[k] = flat[off:off + v.numel()]
            off += v.numel()
        elif v.dim() == 4:
            w = v.permute(2, 3, 1, 0).contiguous().permute(3, 2, 0, 1)
            assert not w.is_contiguous() and torch.equal(w, v)
            out[k] = w
        else:
            out[k] = v
    for k, v in sd.items():
        assert torch.equal(out[k], v), k
    return out


class System:
    """Pickles as a call to os.system: a loader that executes globals would create MARKER."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def save(obj, path):
    torch.save(obj, path)
    return path


def rewrite_pkl(src, dst, patch):
    """Copy a torch zip, replacing its data.pkl by patch(bytes)."""
    zin = zipfile.ZipFile(src)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("/data.pkl"):
                data = patch(data)
            # A fixed timestamp keeps the file reproducible byte for byte.
            zout.writestr(zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0)), data)


def patch_after_persid(data, what):
    """Replace the first storage's numel (what='numel': the last int inside the persistent id tuple)
    or the first tensor's storage offset (what='offset': the int right after BINPERSID)."""
    ops = list(pickletools.genops(data))
    i = next(n for n, (op, _, _) in enumerate(ops) if op.name == "BINPERSID")
    if what == "offset":
        j, value = i + 1, 10**6
    else:
        j = max(n for n in range(i) if ops[n][0].name.startswith("BININT"))
        value = 2**40
    op, _, pos = ops[j]
    end = ops[j + 1][2]
    assert op.name.startswith("BININT"), op.name
    enc = b"J" + struct.pack("<i", value) if value < 2**31 else b"\x8a\x06" + value.to_bytes(6, "little")
    return data[:pos] + enc + data[end:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(FIX, "pth"))
    args = ap.parse_args()
    out = args.out
    os.makedirs(out, exist_ok=True)
    src = lambda n: os.path.join(FIX, n)  # noqa: E731
    dst = lambda n: os.path.join(out, n)  # noqa: E731

    valid = []

    def add(name, obj, source, layout):
        p = save(obj, dst(name))
        loaded = torch.load(p, weights_only=True)
        valid.append(dict(file=name, source=source, layout=layout, sha256=sha256(p), bytes=os.path.getsize(p)))
        return loaded

    a_train = state_dict(src("a_narrow.train.safetensors"))
    add("a_narrow.train.pth", a_train, "a_narrow.train.safetensors", "bare state_dict (OrderedDict + _metadata)")
    add("a_narrow.deploy.module.pth", prefixed(state_dict(src("a_narrow.deploy.safetensors"))),
        "a_narrow.deploy.safetensors", "deploy form, keys prefixed `module.`")
    add("a_narrow_f16.train.pth", state_dict(src("a_narrow_f16.train.safetensors")),
        "a_narrow_f16.train.safetensors", "float16 storages")
    add("a_narrow_bf16.train.pth", state_dict(src("a_narrow_bf16.train.safetensors")),
        "a_narrow_bf16.train.safetensors", "bfloat16 storages")
    add("a_narrow.train.views.pth", as_views(a_train), "a_narrow.train.safetensors",
        "views: 1-D tensors share one storage at offsets, 4-D weights non-contiguous")
    add("g4_narrow.official.train.model.pth",
        {"model": state_dict(src("g4_narrow.official.train.safetensors")), "epoch": 120, "arch": "RepVGG-B1g4",
         "best_acc1": 73.5, "lr": [0.1, 0.01], "ema": None},
        "g4_narrow.official.train.safetensors", "official naming, wrapped {'model': ..., 'epoch': ...}")
    add("d2se_narrow.official.deploy.state_dict.pth",
        {"state_dict": prefixed(state_dict(src("d2se_narrow.official.deploy.safetensors"))), "epoch": 3,
         "flags": (True, False)},
        "d2se_narrow.official.deploy.safetensors", "official naming, deploy, SE, {'state_dict': module.*}")

    p = dst("a_narrow.deploy.legacy.pth")
    torch.save(state_dict(src("a_narrow.deploy.safetensors")), p, _use_new_zipfile_serialization=False)
    torch.load(p, weights_only=True)
    valid.append(dict(file="a_narrow.deploy.legacy.pth", source="a_narrow.deploy.safetensors",
                      layout="legacy (pre-1.6, non-zip) torch.save format", sha256=sha256(p), bytes=os.path.getsize(p)))

    # Hostile files.
    hostile = []
    save({"model": collections.OrderedDict(), "x": System()}, dst("evil_system.pth"))
    hostile.append(dict(file="evil_system.pth", expect="pickle global `posix.system`"))
    small = collections.OrderedDict(w=torch.arange(4, dtype=torch.float32))
    save({"state_dict": small, "args": argparse.Namespace(lr=0.1)}, dst("evil_global.pth"))
    hostile.append(dict(file="evil_global.pth", expect="pickle global `argparse.Namespace`"))
    with open(dst("a_narrow.train.pth"), "rb") as f:
        whole = f.read()
    with open(dst("truncated.pth"), "wb") as f:
        f.write(whole[: len(whole) // 2])
    hostile.append(dict(file="truncated.pth", expect="not a readable zip archive"))
    tmp = dst("tmp_view.pth")
    save(collections.OrderedDict(w=torch.arange(8, dtype=torch.float32)[2:6]), tmp)
    rewrite_pkl(tmp, dst("bad_offset.pth"), lambda d: patch_after_persid(d, "offset"))
    hostile.append(dict(file="bad_offset.pth", expect="storage offset 1000000 ... past the end of storage `0` (8 elements)"))
    rewrite_pkl(tmp, dst("bad_numel.pth"), lambda d: patch_after_persid(d, "numel"))
    hostile.append(dict(file="bad_numel.pth", expect="storage `0` declares 1099511627776 elements ... holds 32 bytes"))
    os.remove(tmp)
    for h in hostile:
        p = dst(h["file"])
        try:
            torch.load(p, weights_only=True)
            raise SystemExit(f"{p}: torch.load(weights_only=True) accepted a hostile file")
        except Exception as e:  # noqa: BLE001  (any rejection is what we want)
            h["torch_weights_only_error"] = type(e).__name__
        h.update(sha256=sha256(p), bytes=os.path.getsize(p))
    assert not os.path.exists(MARKER), "something executed the payload"

    write_json(dst("manifest.json"), dict(generator="scripts/ref/gen_pth_fixtures.py", versions=versions(),
                                          valid=valid, hostile=hostile, marker=MARKER))
    print(json.dumps(dict(valid=len(valid), hostile=len(hostile),
                          total_bytes=sum(v["bytes"] for v in valid + hostile))))


if __name__ == "__main__":
    main()
