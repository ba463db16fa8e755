"""The package's API: models, runners, features, saving, ONNX, classify, threads, from_timm."""

import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import repvgg
from conftest import FIXTURES, read_safetensors

A = FIXTURES / "a_narrow.train.safetensors"
IMAGES = [FIXTURES / "classify" / "a_320x280.png", FIXTURES / "classify" / "b_97x131.png"]


def batch(n=2, seed=0, hw=32):
    return np.random.default_rng(seed).standard_normal((n, 3, hw, hw)).astype(np.float32)


def test_model_properties():
    m = repvgg.load(A)
    assert (m.form, m.num_classes, m.in_channels, m.naming) == ("train", 10, 3, "timm")
    assert Path(m.path) == A
    fused = m.fuse()
    assert fused.form == "deploy" and fused.arch == m.arch and fused.path == m.path
    assert repvgg.load(FIXTURES / "a_narrow.official.train.safetensors").naming == "official"
    assert "repvgg.Model" in repr(m)
    d = repvgg.digits()
    assert d.num_classes == 10 and d.form == "train"


def test_runner_properties():
    r = repvgg.load(A).runner(device="cpu", threads=1)
    assert (r.form, r.precision, r.num_classes) == ("deploy", "f32", 10)
    assert r.device.startswith("cpu"), r.device
    assert "1 threads" in r.adapter
    assert "repvgg.Runner" in repr(r)


def test_features_are_the_stages_and_the_logits():
    r = repvgg.load(A).runner(device="cpu")
    x = batch()
    f = r.run(x, features=True)
    assert list(f) == ["stage0", "stage1", "stage2", "stage3", "stage4", "logits"]
    assert f["stage0"].shape == (2, 8, 16, 16)
    assert np.array_equal(f["logits"], r.run(x))


def test_fused_train_and_deploy_forms_agree():
    m = repvgg.load(A)
    x = batch()
    train = m.runner(device="cpu", form="train")(x)
    deploy = m.runner(device="cpu", form="deploy")(x)
    assert np.max(np.abs(train - deploy)) < 1e-4
    assert not np.array_equal(train, np.zeros_like(train))


@pytest.mark.parametrize("naming", ["timm", "official"])
def test_save_round_trip(tmp_path, naming):
    m = repvgg.load(A)
    out = tmp_path / f"a.{naming}.safetensors"
    m.save(out, naming=naming)
    back = repvgg.load(str(out))
    assert (back.form, back.naming, back.arch) == ("deploy", naming, m.arch)
    x = batch()
    assert np.array_equal(back.runner(device="cpu")(x), m.runner(device="cpu")(x))


def test_onnx_round_trip_in_onnxruntime(tmp_path):
    import onnxruntime as ort
    m = repvgg.load(A)
    path = tmp_path / "a.onnx"
    m.export_onnx(path, opset=17)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = batch(n=3, hw=40)  # batch and size are symbolic in the graph
    (theirs,) = sess.run(["logits"], {"input": x})
    ours = m.runner(device="cpu")(x)
    assert theirs.shape == ours.shape == (3, 10)
    assert np.max(np.abs(theirs - ours)) < 1e-4


def test_one_runner_many_python_threads():
    r = repvgg.load(A).runner(device="cpu")
    inputs = [batch(n=1 + i % 3, seed=i) for i in range(32)]
    alone = [r(x) for x in inputs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        shared = list(pool.map(r, inputs))
    for i, (a, b) in enumerate(zip(alone, shared)):
        assert np.array_equal(a, b), f"input {i}"


def test_the_gil_is_released_while_the_engine_runs():
    # A counting thread can only move while the runner's thread is inside `run` if `run`
    # released the GIL. The long switch interval keeps the interpreter from handing the GIL
    # over between the two reads of the counter on its own, so with the GIL held the count
    # would not move at all.
    r = repvgg.load(A).runner(device="cpu", threads=1)
    x = batch(n=8, hw=128)
    r(x[:1])  # warm up
    ticks = [0]
    stop = threading.Event()

    def count():
        while not stop.is_set():
            ticks[0] += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    try:
        t = threading.Thread(target=count)
        t.start()
        before = ticks[0]
        r(x)
        during = ticks[0] - before
        stop.set()
        t.join()
    finally:
        sys.setswitchinterval(old)
    assert during > 100, during


def test_classify_paths_arrays_and_the_binary_agree(cli):
    r = repvgg.load(A).runner(device="cpu")
    by_path = r.classify(IMAGES, top=3)
    assert len(by_path) == 2 and all(len(row) == 3 for row in by_path)
    for row in by_path:
        probs = [c.prob for c in row]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
        assert all(isinstance(c.index, int) and c.label for c in row)
    out = json.loads(cli.run("classify", *IMAGES, "--weights", A, "--top", "3", "--device", "cpu", "--json").stdout)
    for ours, theirs in zip(by_path, out):
        assert [c.index for c in ours] == [g["index"] for g in theirs["top"]]
        # The binary prints each f32 as its shortest decimal; back in f32 it is the same number.
        assert [np.float32(c.prob) for c in ours] == [np.float32(g["prob"]) for g in theirs["top"]]
    # Pixels in memory: the PNG decoded by the test's own reader gives the same answer.
    pixels = [read_png(p) for p in IMAGES]
    by_array = r.classify(pixels, top=3)
    assert [[c.index for c in row] for row in by_array] == [[c.index for c in row] for row in by_path]
    assert [[c.prob for c in row] for row in by_array] == [[c.prob for c in row] for row in by_path]


def test_digits_classify_a_batch_array():
    r = repvgg.digits().runner(device="cpu")
    imgs = np.zeros((4, 8, 8, 3), np.uint8)
    imgs[:, 1:7, 3:5] = 255  # a vertical bar: a one
    out = r.classify(imgs, top=2)
    assert len(out) == 4 and all(row[0].index == out[0][0].index for row in out)


def test_from_timm_takes_a_state_dict_of_arrays():
    state = read_safetensors(A)  # numpy arrays, num_batches_tracked included
    m = repvgg.from_timm(state)
    x = batch()
    assert m.form == "train"
    assert np.array_equal(m.runner(device="cpu", form="train")(x), repvgg.load(A).runner(device="cpu", form="train")(x))
    with pytest.raises(TypeError, match="state_dict"):
        repvgg.from_timm(42)
    del state["head.fc.weight"]
    with pytest.raises(repvgg.CheckpointError, match="head.fc.weight"):
        repvgg.from_timm(state)


def test_from_timm_takes_a_torch_module():
    torch = pytest.importorskip("torch")
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    module = timm.create_model("repvgg_a0", pretrained=False, num_classes=10).eval()
    m = repvgg.from_timm(module)
    x = batch(n=1, hw=64)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    got = m.runner(device="cpu")(x)
    assert np.max(np.abs(got - want)) < 1e-4


def read_png(path):
    """RGB pixels of an 8-bit, non-interlaced RGB or RGBA PNG, decoded with zlib only."""
    import struct
    import zlib

    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, color, _, _, interlace = ihdr
    assert depth == 8 and interlace == 0 and color in (2, 6), ihdr
    ch = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = w * ch
    out = np.zeros((h, stride), np.int32)
    prev = np.zeros(stride, np.int32)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int32)
        cur = np.zeros(stride, np.int32)
        for i in range(stride):
            a = cur[i - ch] if i >= ch else 0
            b = prev[i]
            c = prev[i - ch] if i >= ch else 0
            if f == 0:
                pred = 0
            elif f == 1:
                pred = a
            elif f == 2:
                pred = b
            elif f == 3:
                pred = (a + b) // 2
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[i] = (line[i] + pred) & 0xFF
        out[y] = cur
        prev = cur
    return out.reshape(h, w, ch)[:, :, :3].astype(np.uint8)
