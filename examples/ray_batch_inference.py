"""Classify a folder (or any URI Ray Data reads) of images on a Ray cluster with repvgg, and write
the top-k classes of every image to Parquet.

    python examples/ray_batch_inference.py IMAGES_URI OUTPUT_DIR [--weights W] [--concurrency N]
    python examples/ray_batch_inference.py IMAGES_URI OUTPUT_DIR --torch --arch repvgg_a0 ...

Each actor of the `map_batches` pool loads the model once and runs its batches on repvgg's own
engine (no torch). With `--torch`, the same pipeline runs timm in PyTorch instead, so the two
are compared on one cluster with the same images and the same `concurrency`.

On a multi-node cluster (`ray start --head` on one machine, `ray start --address=HEAD:6379` on
the others), run this on any node with `--address auto`; the weights file must be readable at
the same path on every node (shared storage), or pass an `s3://`/`gs://` URI that Ray Data and
your nodes can read for the images. See the README's "Python" section for what was tested.
"""

import argparse
import os
import time

import numpy as np


def _lists(rows):
    """A column of lists (Arrow list<string>), not a 2-D object array, which Arrow refuses."""
    out = np.empty(len(rows), dtype=object)
    out[:] = rows
    return out


class RepvggClassifier:
    """A `map_batches` callable class: the model is loaded once per actor."""

    def __init__(self, weights=None, top=5, device="cpu", threads=None, crash_marker=None,
                 crash_after=2):
        import repvgg

        model = repvgg.load(weights) if weights else repvgg.digits()
        self.runner = model.runner(device=device, threads=threads)
        self.top = top
        # Fault injection for the tests: the first actor to start its batch number
        # `crash_after + 1` while no marker file exists writes the marker and dies mid-batch,
        # once per run.
        self.crash_marker = crash_marker
        self.crash_after = crash_after
        self.batches = 0

    def __call__(self, batch):
        self.batches += 1
        if (self.crash_marker and self.batches > self.crash_after
                and not os.path.exists(self.crash_marker)):
            with open(self.crash_marker, "w") as f:
                f.write(str(os.getpid()))
            os._exit(1)
        images = list(batch["image"])
        classes = self.runner.classify(images, top=self.top)
        return {
            "path": np.asarray(batch["path"]),
            "top_index": np.array([[c.index for c in row] for row in classes], dtype=np.int64),
            "top_prob": np.array([[c.prob for c in row] for row in classes], dtype=np.float32),
            "top_label": _lists([[c.short_label for c in row] for row in classes]),
        }


class TimmClassifier:
    """The same step in PyTorch: timm's model and its own eval transform (needs torch, timm)."""

    def __init__(self, arch, weights=None, top=5, threads=None):
        import timm
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model = timm.create_model(arch, pretrained=False).eval()
        if weights:
            from safetensors.torch import load_file

            state = load_file(weights) if weights.endswith(".safetensors") else torch.load(weights)
            self.model.load_state_dict(state)
        cfg = timm.data.resolve_data_config({}, model=self.model)
        self.transform = timm.data.create_transform(**cfg)
        self.top = top

    def __call__(self, batch):
        from PIL import Image

        x = self.torch.stack([self.transform(Image.fromarray(img)) for img in batch["image"]])
        with self.torch.no_grad():
            p = self.model(x).softmax(-1)
        prob, index = p.topk(self.top, dim=-1)
        return {
            "path": np.asarray(batch["path"]),
            "top_index": index.numpy().astype(np.int64),
            "top_prob": prob.numpy().astype(np.float32),
        }


def pipeline(images_uri, weights=None, concurrency=2, batch_size=64, top=5, threads=None,
             use_torch=False, arch="repvgg_a0", max_restarts=0, crash_marker=None,
             actor_cpus=None):
    """The lazy Ray Data pipeline: read, classify, ready to write or collect. Each actor
    reserves `actor_cpus` CPUs (default: its engine threads, or 1); leave some for the reads."""
    import ray

    ds = ray.data.read_images(images_uri, mode="RGB", include_paths=True)
    if use_torch:
        fn, kwargs = TimmClassifier, {"arch": arch, "weights": weights, "top": top, "threads": threads}
    else:
        fn, kwargs = RepvggClassifier, {"weights": weights, "top": top, "threads": threads,
                                        "crash_marker": crash_marker}
    return ds.map_batches(
        fn,
        fn_constructor_kwargs=kwargs,
        batch_size=batch_size,
        concurrency=concurrency,
        num_cpus=actor_cpus if actor_cpus is not None else (threads or 1),
        # A crashed actor is restarted and its batch retried, so no image is lost; Ray Data
        # writes each batch's output once, so none is duplicated.
        max_restarts=max_restarts,
        max_task_retries=-1 if max_restarts else 0,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", help="a folder of images or any URI ray.data.read_images reads")
    ap.add_argument("output", help="the Parquet output folder")
    ap.add_argument("--weights", help="checkpoint (.safetensors/.pth); default: the digits model")
    ap.add_argument("--concurrency", type=int, default=2, help="actors (one model each)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="engine threads per actor")
    ap.add_argument("--actor-cpus", type=float, default=None,
                    help="CPUs each actor reserves (default: --threads); below the cluster's "
                         "CPUs divided by --concurrency, so the image reads get CPUs too")
    ap.add_argument("--torch", action="store_true", help="run timm in PyTorch instead")
    ap.add_argument("--arch", default="repvgg_a0", help="timm model name for --torch")
    ap.add_argument("--max-restarts", type=int, default=2, help="restarts of a crashed actor")
    ap.add_argument("--address", default=None, help="Ray cluster address (`auto` to join one)")
    a = ap.parse_args()

    import ray

    ray.init(address=a.address)
    start = time.perf_counter()
    ds = pipeline(a.images, a.weights, a.concurrency, a.batch_size, a.top, a.threads, a.torch,
                  a.arch, a.max_restarts, actor_cpus=a.actor_cpus)
    ds.write_parquet(a.output)
    seconds = time.perf_counter() - start
    n = ray.data.read_parquet(a.output).count()
    engine = "timm (PyTorch)" if a.torch else "repvgg"
    print(f"{engine}: {n} images in {seconds:.2f} s, {n / seconds:.1f} images/s, "
          f"concurrency {a.concurrency}, wrote {a.output}")


if __name__ == "__main__":
    main()
