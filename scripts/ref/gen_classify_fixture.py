#!/usr/bin/env python3
"""Reference data for `repvgg classify`: timm's eval transform on two synthetic images, and the
bundled ImageNet-1k class names.

Writes
    tests/fixtures/classify/a_320x280.png       RGB, gradients, stripes and shapes (downscaled by the transform)
    tests/fixtures/classify/b_97x131.png        RGBA with varying alpha (upscaled; alpha is dropped)
    tests/fixtures/classify/<model>__<image>.png  timm's transform output for that model, as 8-bit RGB
    tests/fixtures/classify/manifest.json       resolved data configs, shapes, checks, versions, sha256
    assets/imagenet/labels.txt                  1000 lines, class-index order (timm.data.ImageNetInfo)

The transform is timm's own: `timm.data.resolve_data_config({}, model=timm.create_model(name))` +
`timm.data.create_transform(**cfg)` on `Image.open(path).convert('RGB')`. Its output (after ToTensor
and Normalize) is stored losslessly as 8-bit pixels: the script recovers `round((x*std+mean)*255)`,
re-normalizes it exactly as torchvision does (float32) and asserts the result equals timm's tensor
bit for bit, so the PNG *is* timm's output. The Rust test decodes it and normalizes the same way.

Usage (repository root):  /tmp/ref-venv/bin/python scripts/ref/gen_classify_fixture.py
"""
import os
import sys

import numpy as np
import torch
from PIL import Image

import timm
from timm.data import ImageNetInfo, create_transform, resolve_data_config

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import rel, sha256, versions, write_json  # noqa: E402

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
OUT = os.path.join(REPO_ROOT, "tests", "fixtures", "classify")
LABELS = os.path.join(REPO_ROOT, "assets", "imagenet", "labels.txt")

MODELS = ["repvgg_a0", "repvgg_d2se"]


def image_a():
    """320x280 RGB: smooth gradients, fine stripes, a checkerboard and a disc (deterministic)."""
    w, h = 320, 280
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * x / (w - 1)
    g = 255 * y / (h - 1)
    b = 127.5 + 127.5 * np.sin(x / 7.0) * np.cos(y / 11.0)
    img = np.stack([r, g, b], -1)
    stripes = (x > 200) & (y < 120)
    img[stripes] = np.where(((x[stripes].astype(int)) % 3 == 0)[:, None], [250, 20, 30], [10, 240, 200])
    checker = (x < 90) & (y > 180)
    cb = ((x.astype(int) // 5 + y.astype(int) // 5) % 2 == 0)
    img[checker & cb] = [0, 0, 0]
    img[checker & ~cb] = [255, 255, 255]
    disc = (x - 170) ** 2 + (y - 170) ** 2 < 45 ** 2
    img[disc] = [240, 200, 30]
    return Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8), "RGB")


def image_b():
    """97x131 RGBA: diagonal gradient, a ring, a one-pixel grid; alpha varies (ignored by convert('RGB'))."""
    w, h = 97, 131
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 255 * (x + y) / (w + h - 2)
    g = 128 + 100 * np.sin((x - y) / 5.0)
    b = 255 - 255 * y / (h - 1)
    img = np.stack([r, g, b], -1)
    ring = np.abs(np.hypot(x - 48, y - 70) - 30) < 4
    img[ring] = [20, 30, 220]
    grid = (x.astype(int) % 8 == 0) | (y.astype(int) % 8 == 0)
    img[grid & (y < 40)] = [255, 255, 255]
    alpha = np.clip(255 * x / (w - 1), 0, 255)
    rgba = np.concatenate([np.clip(np.round(img), 0, 255), alpha[..., None].round()], -1).astype(np.uint8)
    return Image.fromarray(rgba, "RGBA")


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    images = {"a_320x280": image_a(), "b_97x131": image_b()}
    for name, im in images.items():
        im.save(os.path.join(OUT, f"{name}.png"), optimize=True)

    manifest = {"generator": "scripts/ref/gen_classify_fixture.py", "versions": versions(), "models": {}, "outputs": []}
    for model_name in MODELS:
        model = timm.create_model(model_name, pretrained=False)
        cfg = resolve_data_config({}, model=model)
        tf = create_transform(**cfg)
        manifest["models"][model_name] = {
            "input_size": list(cfg["input_size"]),
            "crop_pct": cfg["crop_pct"],
            "interpolation": cfg["interpolation"],
            "mean": list(cfg["mean"]),
            "std": list(cfg["std"]),
            "crop_mode": cfg.get("crop_mode"),
            "transform": repr(tf),
        }
        mean = torch.tensor(cfg["mean"], dtype=torch.float32)[:, None, None]
        std = torch.tensor(cfg["std"], dtype=torch.float32)[:, None, None]
        for img_name in images:
            pil = Image.open(os.path.join(OUT, f"{img_name}.png")).convert("RGB")
            x = tf(pil)
            assert x.dtype == torch.float32 and x.shape == (3, cfg["input_size"][1], cfg["input_size"][2])
            pix = torch.round((x * std + mean) * 255)
            err_int = float((((x * std + mean) * 255) - pix).abs().max())
            assert err_int < 1e-3, err_int
            pix_u8 = pix.clamp(0, 255).to(torch.uint8)
            again = (pix_u8.to(torch.float32).div(255) - mean) / std
            exact = float((again - x).abs().max())
            assert exact == 0.0, f"re-normalized differs from timm by {exact}"
            out_name = f"{model_name}__{img_name}.png"
            Image.fromarray(pix_u8.permute(1, 2, 0).contiguous().numpy(), "RGB").save(os.path.join(OUT, out_name), optimize=True)
            manifest["outputs"].append({
                "file": out_name, "model": model_name, "image": f"{img_name}.png", "shape": list(x.shape),
                "max_distance_to_integer_pixels": err_int, "renormalized_max_abs_diff": exact,
                "sum": float(x.double().sum()),
            })

    info = ImageNetInfo("imagenet-1k")
    labels = info.label_descriptions()
    assert len(labels) == 1000 and all(l.strip() and "\n" not in l for l in labels)
    os.makedirs(os.path.dirname(LABELS), exist_ok=True)
    with open(LABELS, "w") as f:
        f.write("\n".join(labels) + "\n")

    manifest["labels"] = {"file": rel(LABELS, REPO_ROOT), "source": "timm.data.ImageNetInfo('imagenet-1k').label_descriptions()"}
    manifest["sha256"] = {rel(p, REPO_ROOT): sha256(p) for p in
                          sorted([os.path.join(OUT, f) for f in os.listdir(OUT) if f.endswith(".png")]) + [LABELS]}
    write_json(os.path.join(OUT, "manifest.json"), manifest)
    for o in manifest["outputs"]:
        print(o["file"], o["shape"], "exact" if o["renormalized_max_abs_diff"] == 0 else o["renormalized_max_abs_diff"])
    print("labels:", len(labels), labels[0], "...", labels[-1])


if __name__ == "__main__":
    main()
