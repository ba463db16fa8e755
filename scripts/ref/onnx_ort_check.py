#!/usr/bin/env python3
"""Check `repvgg export` with ONNX Runtime against timm, and time it against timm's own export.

1. Builds timm `repvgg_a0` (random init, seeded; BN running stats randomised so the fusion is
   not trivial) and saves its *train-form* state_dict as a .pth.
2. `repvgg export --weights a0.pth --output ours.onnx` (our Rust fusion + ONNX writer).
3. timm's own deploy export: `timm.utils.reparameterize_model` + `torch.onnx.export` (TorchScript
   exporter, opset 17, dynamic batch) -> timm.onnx.
4. ONNX Runtime (CPU) runs both on the same float32 input; both are compared with timm's float64
   train-form output, and timed interleaved (A/B per repetition, median) at batch 1 and 8.

Prints one JSON object. Needs torch, timm and onnxruntime (see scripts/ref/README.md).

    cargo build --release -p repvgg-cli
    $HOME/ref-venv/bin/python scripts/ref/onnx_ort_check.py --repvgg target/release/repvgg
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
import warnings

import numpy as np
import onnxruntime as ort
import timm
import torch


def build_a0(seed):
    torch.manual_seed(seed)
    m = timm.create_model("repvgg_a0", pretrained=False).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                n = mod.num_features
                mod.weight.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                mod.bias.copy_(torch.rand(n, generator=g) - 0.5)
                mod.running_mean.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)
                mod.running_var.copy_(torch.rand(n, generator=g) * 2.0 + 0.5)
    return m


def session(path, threads):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repvgg", required=True, help="path to the repvgg binary")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = args.workdir or tempfile.mkdtemp(prefix="repvgg_onnx_")
    os.makedirs(work, exist_ok=True)

    m = build_a0(0)
    pth = os.path.join(work, "repvgg_a0_random.pth")
    torch.save(m.state_dict(), pth)
    ours = os.path.join(work, "ours.onnx")
    subprocess.run([args.repvgg, "export", "--weights", pth, "--output", ours, "--opset", "17"], check=True)

    x = torch.randn(8, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref64 = build_a0(0).double()(x.double()).numpy()
        deploy = timm.utils.reparameterize_model(m)
        timm32 = deploy(x).numpy()
    theirs = os.path.join(work, "timm.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(deploy, (x[:1],), theirs, input_names=["input"], output_names=["logits"],
                          opset_version=17, dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, dynamo=False)

    s_ours, s_timm = session(ours, args.threads), session(theirs, args.threads)
    xn = x.numpy()
    y_ours = s_ours.run(["logits"], {"input": xn})[0]
    y_timm = s_timm.run(["logits"], {"input": xn})[0]
    meta = s_ours.get_modelmeta().custom_metadata_map

    timing = {}
    for batch in (1, 8):
        xb = xn[:batch]
        for s in (s_ours, s_timm):  # warm-up
            s.run(["logits"], {"input": xb})
        t_ours, t_timm = [], []
        for _ in range(args.reps):
            for s, acc in ((s_ours, t_ours), (s_timm, t_timm)):
                t0 = time.perf_counter()
                s.run(["logits"], {"input": xb})
                acc.append(time.perf_counter() - t0)
        timing[f"batch{batch}"] = dict(ours_ms=1e3 * statistics.median(t_ours),
                                       timm_ms=1e3 * statistics.median(t_timm),
                                       ratio_ours_over_timm=statistics.median(t_ours) / statistics.median(t_timm))
    out = dict(
        versions=dict(torch=torch.__version__, timm=timm.__version__, onnxruntime=ort.__version__),
        input=list(xn.shape), threads=args.threads, reps=args.reps,
        max_abs_ours_ort_vs_timm_f64=float(np.abs(y_ours - ref64).max()),
        max_abs_timm_onnx_ort_vs_timm_f64=float(np.abs(y_timm - ref64).max()),
        max_abs_timm_f32_torch_vs_timm_f64=float(np.abs(timm32 - ref64).max()),
        max_abs_ours_vs_timm_onnx=float(np.abs(y_ours - y_timm).max()),
        max_abs_logit=float(np.abs(ref64).max()),
        argmax_equal=bool((y_ours.argmax(1) == ref64.argmax(1)).all()),
        ours_bytes=os.path.getsize(ours), timm_bytes=os.path.getsize(theirs),
        ours_metadata=meta,
        timing=timing,
    )
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
