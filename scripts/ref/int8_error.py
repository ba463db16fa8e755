#!/usr/bin/env python3
"""Int8 error of our quantization next to ONNX Runtime's, on the timm fixtures.

For every fixture without squeeze-excite (the int8 engine runs none) this script, with one set of
calibration inputs and one set of evaluation inputs:

1. f32 reference: `repvgg export` of the fixture's deploy form, run in ONNX Runtime (checked
   against the fixture's timm float64 deploy logits on the fixture's own two inputs).
2. Ours: `repvgg quantize --calib calib.safetensors --method M` (the calibration inputs as a
   tensor file), then `repvgg infer --precision int8` on the evaluation inputs.
3. Our QDQ export: `repvgg export` of the int8 file, run in ONNX Runtime (how far ORT's
   arithmetic is from our engine on our own calibration).
4. ORT: `onnxruntime.quantization.quantize_static` of the same f32 export, QDQ, per-channel int8
   weights, uint8 activations, calibrated on the same inputs with method M' (MinMax, Percentile).

Errors against the f32 reference: relative L2 (||q - f|| / ||f|| over every logit), the largest
|q - f| over the largest |f|, and top-1 agreement. Prints a table and, with --json, one JSON
object. The inputs are seeded standard-normal tensors, the distribution of the fixtures' own
inputs (the evaluation set starts with those two).

    cargo build -p repvgg-cli        # or --release
    $HOME/ref-venv/bin/python scripts/ref/int8_error.py --repvgg target/debug/repvgg

Needs numpy, safetensors, onnx and onnxruntime (see scripts/ref/README.md); no torch.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                      QuantType, quantize_static)
from safetensors.numpy import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "..", "tests", "fixtures")
# The fixtures the int8 engine runs (d2se_narrow has squeeze-excite blocks).
DEFAULT_FIXTURES = ["a_narrow", "g4_narrow", "g4_odd", "tiny_nonsquare"]
OURS = ["minmax", "percentile", "mse"]
THEIRS = {"MinMax": CalibrationMethod.MinMax, "Percentile": CalibrationMethod.Percentile}


class Reader(CalibrationDataReader):
    """The calibration inputs one at a time, as our `--calib` reads them."""

    def __init__(self, x):
        self.items = iter([{"input": x[i:i + 1]} for i in range(len(x))])

    def get_next(self):
        return next(self.items, None)


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def run_ort(path, x):
    return session(path).run(["logits"], {"input": x})[0].astype(np.float64)


def repvgg(binary, *args):
    r = subprocess.run([binary, *args], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"repvgg {' '.join(args)} failed:\n{r.stderr}")
    return r


def errors(q, f):
    return {
        "rel_l2": float(np.linalg.norm(q - f) / np.linalg.norm(f)),
        "max_rel": float(np.abs(q - f).max() / np.abs(f).max()),
        "top1": float((q.argmax(1) == f.argmax(1)).mean()),
    }


def fixture_rows(name, args, work):
    io = load_file(os.path.join(FIXTURES, f"{name}.io.safetensors"))
    deploy = os.path.join(FIXTURES, f"{name}.deploy.safetensors")
    x0 = io["input"]
    n, c, h, w = x0.shape
    calib = np.random.default_rng(args.seed).standard_normal((args.calib, c, h, w)).astype(np.float32)
    more = np.random.default_rng(args.seed + 1).standard_normal((args.eval - n, c, h, w))
    x = np.concatenate([x0, more.astype(np.float32)])
    d = os.path.join(work, name)
    os.makedirs(d, exist_ok=True)
    calib_path, eval_path = os.path.join(d, "calib.safetensors"), os.path.join(d, "eval.safetensors")
    save_file({"input": calib}, calib_path)
    save_file({"input": x}, eval_path)

    f32_onnx = os.path.join(d, "f32.onnx")
    repvgg(args.repvgg, "export", "--weights", deploy, "--output", f32_onnx)
    ref = run_ort(f32_onnx, x)
    vs_timm = float(np.abs(ref[:n] - io["deploy.logits"]).max())

    rows = []
    for method in OURS:
        q = os.path.join(d, f"int8_{method}.safetensors")
        repvgg(args.repvgg, "quantize", "--weights", deploy, "--calib", calib_path, "--images",
               str(args.calib), "--method", method, "--output", q, "--quiet")
        out = os.path.join(d, f"logits_{method}.safetensors")
        repvgg(args.repvgg, "infer", "--weights", q, "--input", eval_path, "--output", out,
               "--device", "cpu", "--precision", "int8")
        ours = load_file(out)["logits"].astype(np.float64)
        qdq = os.path.join(d, f"int8_{method}.onnx")
        repvgg(args.repvgg, "export", "--weights", q, "--output", qdq)
        in_ort = run_ort(qdq, x)
        rows.append({"fixture": name, "who": "ours", "method": method, **errors(ours, ref),
                     "qdq_in_ort_vs_ours_max_rel": float(np.abs(in_ort - ours).max() / np.abs(ours).max()),
                     "qdq_in_ort_vs_ours_top1": float((in_ort.argmax(1) == ours.argmax(1)).mean()),
                     "qdq_in_ort": errors(in_ort, ref)})
    for label, method in THEIRS.items():
        out = os.path.join(d, f"ort_{label}.onnx")
        quantize_static(f32_onnx, out, Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=method)
        rows.append({"fixture": name, "who": "ort", "method": label, **errors(run_ort(out, x), ref)})
    return {"fixture": name, "input": [c, h, w], "f32_ort_vs_timm_f64": vs_timm, "rows": rows}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repvgg", required=True, help="the repvgg binary")
    ap.add_argument("--fixtures", nargs="+", default=DEFAULT_FIXTURES)
    ap.add_argument("--calib", type=int, default=32, help="calibration inputs")
    ap.add_argument("--eval", type=int, default=64, help="evaluation inputs (the fixture's 2 first)")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = args.workdir or tempfile.mkdtemp(prefix="repvgg_int8_")
    result = {"onnxruntime": ort.__version__, "calib": args.calib, "eval": args.eval,
              "seed": args.seed, "fixtures": [fixture_rows(f, args, work) for f in args.fixtures]}
    if args.json:
        print(json.dumps(result, indent=1))
        return
    print(f"int8 logits vs f32 (ONNX Runtime {ort.__version__}; {args.calib} calibration inputs, "
          f"{args.eval} evaluation inputs, seed {args.seed})")
    print(f"{'fixture':<15} {'who':<5} {'method':<11} {'rel L2':>8} {'max/max':>8} {'top-1':>7}"
          f" {'our QDQ in ORT vs ours':>23}")
    for fx in result["fixtures"]:
        for r in fx["rows"]:
            extra = ""
            if "qdq_in_ort_vs_ours_max_rel" in r:
                extra = (f"{r['qdq_in_ort_vs_ours_max_rel']:>11.2e} max/max "
                         f"{100 * r['qdq_in_ort_vs_ours_top1']:>5.1f}%")
            print(f"{r['fixture']:<15} {r['who']:<5} {r['method']:<11} {r['rel_l2']:>8.4f} "
                  f"{r['max_rel']:>8.4f} {100 * r['top1']:>6.1f}% {extra}")
        print(f"{fx['fixture']:<15} f32 reference (ORT on our f32 export) vs timm f64: "
              f"max |diff| {fx['f32_ort_vs_timm_f64']:.2e}")


if __name__ == "__main__":
    main()
