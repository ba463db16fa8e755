#!/usr/bin/env python3
"""CPU timing of timm repvgg_a0 (random weights), 224x224, batch 1 and 8, train form vs
timm-reparameterized form. torch.set_num_threads(2); warm-up, then median of N runs.
Prints one JSON row per case: {"engine":"timm","form":...,"batch":...,"median_ms":...}.

Usage: python scripts/ref/bench_timm.py [--runs 20] [--warmup 5] [--threads 2]
"""
import argparse
import json
import statistics
import time

import torch
import timm


def bench(model, x, warmup, runs):
    with torch.inference_mode():
        for _ in range(warmup):
            model(x)
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            model(x)
            ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts), min(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="repvgg_a0")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train = timm.create_model(args.model, pretrained=False).eval()
    deploy = timm.utils.reparameterize_model(train)
    for batch in (1, 8):
        x = torch.randn(batch, 3, 224, 224)
        for form, m in (("train", train), ("deploy", deploy)):
            med, mn = bench(m, x, args.warmup, args.runs)
            print(json.dumps(dict(engine="timm", model=args.model, form=form, batch=batch, median_ms=round(med, 3),
                                  min_ms=round(mn, 3), runs=args.runs, threads=args.threads,
                                  torch=torch.__version__, timm=timm.__version__)), flush=True)


if __name__ == "__main__":
    main()
