"""Every timm fixture through Python: bit for bit the `repvgg` binary's result, both forms, both
namings, safetensors and .pth, CPU and GPU; and within 1e-5 of timm's float64 reference."""

import json
import os

import numpy as np
import pytest

import repvgg
from conftest import FIXTURES, manifest, read_safetensors

TOL = 1e-5


def checkpoints():
    """(fixture name, checkpoint file, its form) for every checkpoint the manifest lists."""
    out = []
    for fx in manifest()["fixtures"]:
        for f in fx["files"]:
            if f["form"] in ("train", "deploy"):
                out.append((fx["name"], f["file"], f["form"]))
    return out


def pth_checkpoints():
    pth = json.loads((FIXTURES / "pth" / "manifest.json").read_text())
    out = []
    for f in pth["valid"]:
        source = f["source"]
        name = source.split(".")[0]
        out.append((name, "pth/" + f["file"], source))
    return out


CHECKPOINTS = checkpoints()


def test_manifest_lists_every_kind():
    assert len({name for name, _, _ in CHECKPOINTS}) >= 5
    assert {form for _, _, form in CHECKPOINTS} == {"train", "deploy"}
    assert len(pth_checkpoints()) >= 4


def forms_of(form):
    return ["train", "deploy"] if form == "train" else ["deploy"]


@pytest.mark.parametrize("name,file,form", CHECKPOINTS, ids=[c[1] for c in CHECKPOINTS])
def test_cpu_matches_the_binary_and_timm(cli, name, file, form):
    io = read_safetensors(FIXTURES / f"{name}.io.safetensors")
    x = io["input"].astype(np.float32)
    model = repvgg.load(FIXTURES / file)
    assert model.form == form
    for run_form in forms_of(form):
        runner = model.runner(device="cpu", form=run_form)
        assert runner.form == run_form
        ours = runner.run(x, features=True)
        theirs = cli.infer(FIXTURES / file, x, form=run_form, device="cpu", features=True)
        assert set(ours) == set(theirs)
        for key, value in ours.items():
            assert value.dtype == np.float32
            assert np.array_equal(value, theirs[key]), f"{file} {run_form} {key}: Python != repvgg infer"
            ref = io[f"{run_form}.{key}"]
            err = np.max(np.abs(value.astype(np.float64) - ref))
            assert err <= TOL, f"{file} {run_form} {key}: {err} from timm"
        assert np.array_equal(runner(x), ours["logits"])


# The GPU (lavapipe in CI, which sets REPVGG_REQUIRE_GPU=1: no adapter is a failure, not a skip).
GPU_CHECKPOINTS = [c for c in CHECKPOINTS if ".official." not in c[1]]
# Against the binary: one plain, one grouped and one squeeze-excite model (each `repvgg infer`
# on a GPU opens a device and its pipelines, seconds on lavapipe).
GPU_VS_BINARY = [c for c in GPU_CHECKPOINTS if c[1] in
                 ("a_narrow.train.safetensors", "g4_odd.train.safetensors", "d2se_narrow.train.safetensors")]
GPU_TOL = {"f32": TOL, "f16": 5e-3}


def gpu_runner(model, form, precision):
    try:
        return model.runner(device="gpu", form=form, precision=precision)
    except repvgg.DeviceError as e:
        # Off CI a GPU without f16 is a skip; CI (REPVGG_REQUIRE_GPU=1, lavapipe has f16) fails.
        if precision == "f16" and "f16" in str(e).lower() and os.environ.get("REPVGG_REQUIRE_GPU") != "1":
            pytest.skip(f"this adapter has no f16: {e}")
        raise


@pytest.mark.parametrize("name,file,form", GPU_CHECKPOINTS, ids=[c[1] for c in GPU_CHECKPOINTS])
@pytest.mark.parametrize("precision", ["f32", "f16"])
def test_gpu_matches_timm(name, file, form, precision):
    io = read_safetensors(FIXTURES / f"{name}.io.safetensors")
    x = io["input"].astype(np.float32)
    model = repvgg.load(FIXTURES / file)
    for run_form in forms_of(form):
        runner = gpu_runner(model, run_form, precision)
        assert runner.device.startswith("gpu"), runner.device
        assert runner.precision == precision
        ours = runner(x)
        err = np.max(np.abs(ours.astype(np.float64) - io[f"{run_form}.logits"]))
        assert err <= GPU_TOL[precision], f"{file} {run_form} {precision}: {err} from timm"


@pytest.mark.parametrize("name,file,form", GPU_VS_BINARY, ids=[c[1] for c in GPU_VS_BINARY])
@pytest.mark.parametrize("precision", ["f32", "f16"])
def test_gpu_matches_the_binary(cli, name, file, form, precision):
    io = read_safetensors(FIXTURES / f"{name}.io.safetensors")
    x = io["input"].astype(np.float32)
    model = repvgg.load(FIXTURES / file)
    for run_form in forms_of(form):
        ours = gpu_runner(model, run_form, precision)(x)
        theirs = cli.infer(FIXTURES / file, x, form=run_form, device="gpu", precision=precision)
        assert np.array_equal(ours, theirs["logits"]), f"{file} {run_form} {precision}: Python != repvgg infer"


@pytest.mark.parametrize("name,file,source", pth_checkpoints(), ids=[c[1] for c in pth_checkpoints()])
def test_pth_loads_like_its_safetensors(name, file, source):
    io = read_safetensors(FIXTURES / f"{name}.io.safetensors")
    x = io["input"].astype(np.float32)
    pth = repvgg.load(FIXTURES / file)
    st = repvgg.load(FIXTURES / source)
    assert (pth.arch, pth.form, pth.num_classes) == (st.arch, st.form, st.num_classes)
    for run_form in forms_of(st.form):
        a = pth.runner(device="cpu", form=run_form)(x)
        b = st.runner(device="cpu", form=run_form)(x)
        assert np.array_equal(a, b), f"{file} {run_form}"
