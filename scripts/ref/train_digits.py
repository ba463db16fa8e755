#!/usr/bin/env python3
"""Train a small timm RepVGG (train-time multi-branch form) on sklearn's bundled 8x8 digits.

Writes assets/digits/{repvgg_digits.train.safetensors, test.safetensors, meta.json}.
CPU only, single thread, fixed seeds (bit-reproducible on the same CPU + torch build).

Usage: python scripts/ref/train_digits.py [--out assets/digits] [--epochs 40]
"""
import argparse
import copy
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import timm
from timm.models.byobnet import ByobNet, ByoModelCfg, _rep_vgg_bcfg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import sha256, state_dict_clean, versions, write_json  # noqa: E402

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

SEED = 0
SRC = 8
SIZE = 32
SCALE = 1.0 / 16.0
MEAN = 0.5
STD = 0.5
CFG = dict(depths=(1, 2, 2, 1), wf=(0.25, 0.25, 0.25, 0.25), stem_chs=16, groups=0, se=False,
           num_classes=10, in_chans=1)


def build():
    cfg = ByoModelCfg(blocks=_rep_vgg_bcfg(d=CFG["depths"], wf=CFG["wf"], groups=CFG["groups"]),
                      stem_type="rep", stem_chs=CFG["stem_chs"])
    return ByobNet(cfg, num_classes=CFG["num_classes"], in_chans=CFG["in_chans"])


def preprocess(images8):
    """images8: float32 [N,8,8] raw 0..16 -> float32 [N,1,32,32]."""
    x = torch.as_tensor(images8, dtype=torch.float32).unsqueeze(1) * SCALE
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return (x - MEAN) / STD


def augment(x, gen):
    """Light augmentation on the 32x32 input: random integer shift of up to +-2 px (zero-padded with
    the background value -1 after normalisation)."""
    n = x.shape[0]
    pad = 2
    xp = F.pad(x, (pad, pad, pad, pad), value=(0.0 - MEAN) / STD)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    out = torch.empty_like(x)
    for i in range(n):
        out[i] = xp[i, :, dy[i]:dy[i] + SIZE, dx[i]:dx[i] + SIZE]
    return out


@torch.no_grad()
def evaluate(m, x, y):
    m.eval()
    logits = m(x)
    return logits, (logits.argmax(1) == y).float().mean().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(REPO_ROOT, "assets", "digits"))
    ap.add_argument("--epochs", type=int, default=40)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)

    d = load_digits()
    images = d.images.astype(np.float32)  # [1797,8,8], values 0..16
    labels = d.target.astype(np.int64)
    idx = np.arange(len(labels))
    tr_idx, te_idx = train_test_split(idx, test_size=0.2, random_state=0, stratify=labels)
    te_idx = np.sort(te_idx)
    xtr, ytr = preprocess(images[tr_idx]), torch.from_numpy(labels[tr_idx])
    xte, yte = preprocess(images[te_idx]), torch.from_numpy(labels[te_idx])

    m = build()
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=5e-4)
    bs = 64
    steps_per_epoch = (len(ytr) + bs - 1) // bs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.epochs * steps_per_epoch,
                                                pct_start=0.15)
    t0 = time.time()
    for ep in range(args.epochs):
        m.train()
        perm = torch.randperm(len(ytr), generator=gen)
        tot = 0.0
        for s in range(steps_per_epoch):
            b = perm[s * bs:(s + 1) * bs]
            xb = augment(xtr[b], gen)
            loss = F.cross_entropy(m(xb), ytr[b], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * len(b)
        if ep % 5 == 4 or ep == args.epochs - 1:
            _, acc = evaluate(m, xte, yte)
            print(f"epoch {ep + 1:3d} loss {tot / len(ytr):.4f} test acc {acc:.4f} ({time.time() - t0:.0f}s)")
    train_s = time.time() - t0

    m.eval()
    logits, acc_train_form = evaluate(m, xte, yte)
    dm = timm.utils.reparameterize_model(m)
    logits_dep, acc_deploy = evaluate(dm, xte, yte)
    _, acc_trainset = evaluate(m, xtr, ytr)
    maxdiff = (logits - logits_dep).abs().max().item()
    print(f"test accuracy: train form {acc_train_form:.4f}, timm-reparameterized {acc_deploy:.4f} "
          f"(max |logit diff| {maxdiff:.2e}); train-set accuracy {acc_trainset:.4f}")

    os.makedirs(args.out, exist_ok=True)
    sd = state_dict_clean(m.state_dict())
    wpath = os.path.join(args.out, "repvgg_digits.train.safetensors")
    save_file(sd, wpath, metadata={"repvgg_ref": "digits train form, timm naming, scripts/ref/train_digits.py"})
    tpath = os.path.join(args.out, "test.safetensors")
    save_file({
        "images8": torch.from_numpy(images[te_idx]).contiguous(),
        "input": xte.contiguous(),
        "labels": yte.contiguous(),
        "logits": logits.float().contiguous(),
        "logits_deploy": logits_dep.float().contiguous(),
    }, tpath, metadata={"repvgg_ref": "digits test split, scripts/ref/train_digits.py"})

    n_params = sum(v.numel() for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    meta = dict(
        generator="scripts/ref/train_digits.py",
        dataset="sklearn.datasets.load_digits() (UCI optdigits test part, 1797 8x8 images, bundled with scikit-learn)",
        split=dict(method="sklearn.model_selection.train_test_split(idx, test_size=0.2, random_state=0, "
                          "stratify=labels); test indices sorted ascending",
                   n_train=int(len(tr_idx)), n_test=int(len(te_idx)),
                   test_indices=[int(i) for i in te_idx]),
        preprocessing=dict(
            source_size=SRC, size=SIZE, scale=SCALE, mean=MEAN, std=STD, in_chans=1,
            steps=["x = pixel (0..16) * 1/16", "bilinear resize 8x8 -> 32x32: torch.nn.functional.interpolate("
                   "mode='bilinear', align_corners=False, antialias=False) (half-pixel centres, edge clamp)",
                   "x = (x - 0.5) / 0.5"],
            interpolation="bilinear", align_corners=False,
        ),
        config=dict(CFG, stage_chs=[st[0].conv_kxk.conv.out_channels for st in m.stages],
                    builder="ByobNet(ByoModelCfg(blocks=_rep_vgg_bcfg(d=depths, wf=wf, groups=0), stem_type='rep', "
                            "stem_chs=16), num_classes=10, in_chans=1)", bn_eps=1e-5, n_params=int(n_params)),
        training=dict(seed=SEED, epochs=args.epochs, batch_size=bs, optimizer="AdamW(lr=3e-3, wd=5e-4)",
                      schedule="OneCycleLR(max_lr=3e-3, pct_start=0.15)", loss="cross_entropy(label_smoothing=0.05)",
                      augmentation="random integer shift +-2 px at 32x32 (pad value -1)", threads=1),
        accuracy=dict(test_train_form=acc_train_form, test_timm_reparameterized=acc_deploy,
                      train_set_train_form=acc_trainset,
                      max_abs_logit_diff_train_vs_reparameterized_f32=maxdiff),
        files={
            "repvgg_digits.train.safetensors": dict(bytes=os.path.getsize(wpath), sha256=sha256(wpath),
                                                    form="train", naming="timm", dtype="float32",
                                                    note="num_batches_tracked (int64) present"),
            "test.safetensors": dict(bytes=os.path.getsize(tpath), sha256=sha256(tpath), tensors=dict(
                images8="[N,8,8] float32 raw 0..16", input="[N,1,32,32] float32 preprocessed",
                labels="[N] int64", logits="[N,10] float32, PyTorch train-form model in eval mode",
                logits_deploy="[N,10] float32, timm.utils.reparameterize_model() of it")),
        },
        versions=versions(),
    )
    write_json(os.path.join(args.out, "meta.json"), meta)
    print(f"wrote {args.out} (train {train_s:.0f}s, {n_params} params)")


if __name__ == "__main__":
    main()
