#!/usr/bin/env python3
"""Paired A/B of `repvgg` binaries on the GPU adapter (lavapipe here).

    python3 scripts/bench/ab_gpu.py OLD_BINARY NEW_BINARY [ROUNDS] [--precision f16]

Each round runs `repvgg bench --device gpu --arch a0 --batch 1,8 --form both --json
[--precision P]` (the CLI's defaults: 10 timed iterations, 2 warm-up) once per binary,
alternating the order, so that a busy host slows both alike. Prints the median images/s of each binary and form, fused /
multi-branch ratios, and the new binary's per-round (paired) ratios over the old one's deploy
form. Build the old binary from its commit first (`git worktree add`, `cargo build --release
-p repvgg-cli`).
"""
import json
import os
import statistics
import subprocess
import sys


def bench(binary, precision):
    env = dict(os.environ, NODEVICE_SELECT="1")
    cmd = [binary, "bench", "--device", "gpu", "--arch", "a0", "--batch", "1,8",
           "--form", "both", "--json", "--precision", precision]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    return {(r["form"], r["batch"]): r["images_per_s"] for r in json.loads(out)}


def main():
    args = sys.argv[1:]
    precision = "f32"
    if "--precision" in args:
        i = args.index("--precision")
        if i + 1 >= len(args):
            sys.exit(__doc__)
        precision = args[i + 1]
        del args[i:i + 2]
    if len(args) < 2:
        sys.exit(__doc__)
    old, new = args[0], args[1]
    rounds = int(args[2]) if len(args) > 2 else 8
    runs = {old: [], new: []}
    for r in range(rounds):
        for b in ((old, new) if r % 2 == 0 else (new, old)):
            runs[b].append(bench(b, precision))
        print(f"round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    med = {b: {k: statistics.median(run[k] for run in runs[b]) for k in runs[b][0]} for b in runs}
    for b in (old, new):
        cells = "  ".join(f"{f} b{n} {v:.1f}" for (f, n), v in sorted(med[b].items()))
        fused = "  ".join(f"b{n} {med[b][('deploy', n)] / med[b][('train', n)]:.2f}x" for n in (1, 8))
        print(f"{b} ({precision}): {cells} img/s; fused / multi-branch {fused}")
    for form in ("deploy", "train"):
        for n in (1, 8):
            k = (form, n)
            paired = [a[k] / b[k] for a, b in zip(runs[new], runs[old])]
            print(f"{precision} {form} b{n}: {med[new][k] / med[old][k]:.2f}x of medians; "
                  f"per round {' '.join(f'{x:.2f}' for x in paired)} "
                  f"(median {statistics.median(paired):.2f}x)")


if __name__ == "__main__":
    main()
