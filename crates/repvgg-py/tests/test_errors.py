"""Bad inputs raise the right exception with a message naming the thing, and the interpreter
lives on; checkpoint errors carry the `repvgg` binary's message."""

import numpy as np
import pytest

import repvgg
from conftest import FIXTURES

A = FIXTURES / "a_narrow.train.safetensors"


@pytest.fixture(scope="module")
def runner():
    return repvgg.load(A).runner(device="cpu")


def good_input():
    return np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)


@pytest.mark.parametrize(
    "x,exc,words",
    [
        (np.zeros((2, 3, 32, 32), np.int32), repvgg.InputTypeError, ["x:", "int32", "(2, 3, 32, 32)"]),
        (np.zeros((2, 3, 32, 32), np.float16), repvgg.InputTypeError, ["x:", "float16"]),
        (np.zeros((2, 3, 32, 32), np.complex64), repvgg.InputTypeError, ["x:", "complex64"]),
        (np.zeros((3, 32, 32), np.float32), repvgg.InputError, ["x:", "4-D", "(3, 32, 32)"]),
        (np.zeros((2, 4, 32, 32), np.float32), repvgg.InputError, ["3", "[2, 4, 32, 32]"]),
        (np.zeros((0, 3, 32, 32), np.float32), repvgg.InputError, ["[0, 3, 32, 32]"]),
        (np.zeros((2, 3, 0, 32), np.float32), repvgg.InputError, ["[2, 3, 0, 32]"]),
        (np.full((1, 3, 8, 8), np.nan, np.float32), repvgg.InputError, ["finite"]),
        ([[[[0.0]]]], repvgg.InputTypeError, ["x:", "list"]),
        ("an image", repvgg.InputTypeError, ["x:", "str"]),
        (None, repvgg.InputTypeError, ["x:", "NoneType"]),
    ],
    ids=["int32", "float16", "complex", "rank3", "channels", "empty-batch", "empty-height", "nan", "list", "str", "none"],
)
def test_bad_batches(runner, x, exc, words):
    with pytest.raises(exc) as e:
        runner.run(x)
    for w in words:
        assert w in str(e.value), f"{w!r} not in {str(e.value)!r}"
    # The families Python users catch.
    assert isinstance(e.value, repvgg.Error)
    assert isinstance(e.value, TypeError if exc is repvgg.InputTypeError else ValueError)
    # The runner still works afterwards.
    assert runner(good_input()).shape == (2, 10)


def test_other_layouts_are_copied_not_misread(runner):
    x = good_input()
    want = runner(x)
    assert np.array_equal(runner(np.asfortranarray(x)), want)
    assert np.array_equal(runner(x.astype(np.float64)), want)
    flipped = np.ascontiguousarray(x[:, :, ::-1, ::-1])
    assert np.array_equal(runner(x[:, :, ::-1, ::-1]), runner(flipped))  # negative strides
    every_other = np.ascontiguousarray(x[::2])
    assert np.array_equal(runner(x[::2]), runner(every_other))  # a strided view
    readonly = x.copy()
    readonly.setflags(write=False)
    assert np.array_equal(runner(readonly), want)


def test_non_native_byte_order_is_converted(runner):
    x = good_input()
    assert np.array_equal(runner(x.astype(">f4")), runner(x))
    assert np.array_equal(runner(x.astype(">f8")), runner(x))


def test_missing_file(cli, tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(repvgg.FileError) as e:
        repvgg.load(missing)
    assert isinstance(e.value, OSError)
    assert str(missing) in str(e.value)
    x = tmp_path / "x.safetensors"
    from conftest import write_input

    write_input(x, good_input())
    assert str(e.value) in cli.error("infer", "--weights", missing, "--input", x, "--output", tmp_path / "y.safetensors")


@pytest.mark.parametrize("bad", ["evil_system.pth", "evil_global.pth", "truncated.pth", "bad_offset.pth", "bad_numel.pth"])
def test_hostile_and_broken_pickles(cli, tmp_path, bad):
    path = FIXTURES / "pth" / bad
    with pytest.raises(repvgg.CheckpointError) as e:
        repvgg.load(path)
    assert isinstance(e.value, ValueError)
    assert bad in str(e.value)
    from conftest import write_input

    x = tmp_path / "x.safetensors"
    write_input(x, good_input())
    assert str(e.value) in cli.error("infer", "--weights", path, "--input", x, "--output", tmp_path / "y.safetensors")
    # The interpreter lives, and so does the library.
    assert repvgg.load(A).num_classes == 10


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(repvgg.CheckpointError, match="junk.safetensors"):
        repvgg.load(junk)
    with pytest.raises(repvgg.CheckpointError, match="<bytes>"):
        repvgg.load_bytes(b"\x00" * 16)
    with pytest.raises(TypeError):
        repvgg.load_bytes("not bytes")


def test_bad_words_and_options():
    model = repvgg.load(A)
    with pytest.raises(repvgg.InputError, match="device"):
        model.runner(device="tpu")
    with pytest.raises(repvgg.InputError, match="precision"):
        model.runner(precision="f8")
    with pytest.raises(repvgg.InputError, match="form"):
        model.runner(form="both")
    with pytest.raises(repvgg.InputError, match="threads"):
        model.runner(device="cpu", threads=0)
    with pytest.raises(repvgg.DeviceError, match="f16"):
        model.runner(device="cpu", precision="f16")
    with pytest.raises(repvgg.CheckpointError, match="deployed"):
        model.fuse().runner(device="cpu", form="train")
    with pytest.raises(repvgg.InputError, match="naming"):
        model.save("x.safetensors", naming="keras")
    with pytest.raises(OverflowError):
        model.runner(device="cpu", threads=-1)


def test_export_errors(tmp_path):
    model = repvgg.load(A)
    with pytest.raises(repvgg.Error, match="opset"):
        model.export_onnx(tmp_path / "m.onnx", opset=99)
    with pytest.raises(repvgg.FileError):
        model.export_onnx(tmp_path / "no" / "such" / "dir" / "m.onnx")
    with pytest.raises(repvgg.FileError):
        model.save(tmp_path / "no" / "such" / "dir" / "m.safetensors")


def test_classify_errors(tmp_path):
    runner = repvgg.digits().runner(device="cpu")
    with pytest.raises(repvgg.InputTypeError, match="images"):
        runner.classify("digit.png")
    with pytest.raises(repvgg.InputTypeError, match=r"images\[1\]"):
        runner.classify([np.zeros((8, 8, 3), np.uint8), 3])
    with pytest.raises(repvgg.InputTypeError, match=r"images\[0\].*float32"):
        runner.classify([np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(repvgg.InputError, match=r"images\[0\].*\(8, 8, 4\)"):
        runner.classify([np.zeros((8, 8, 4), np.uint8)])
    with pytest.raises(repvgg.InputError, match="top"):
        runner.classify([np.zeros((8, 8, 3), np.uint8)], top=0)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    with pytest.raises(repvgg.InputError, match="broken.png"):
        runner.classify([broken])
    with pytest.raises(repvgg.FileError, match="missing.png"):
        runner.classify([tmp_path / "missing.png"])
