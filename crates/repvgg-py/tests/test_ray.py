"""Scale-out on a local Ray cluster: every image classified exactly once, results equal to the
single-process run, and the same after an actor is killed mid-run."""

import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import repvgg
from conftest import ROOT

import ray  # noqa: E402
sys.path.insert(0, str(ROOT / "examples"))
import ray_batch_inference as rbi  # noqa: E402

N_IMAGES = 512


def write_png(path, rgb):
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
    Path(path).write_bytes(png)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """512 generated digit-like images (strokes on black, 16x16 and 24x20), a folder of PNGs."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(7)
    for i in range(N_IMAGES):
        h, w = (16, 16) if i % 2 else (24, 20)
        img = np.zeros((h, w, 3), np.uint8)
        for _ in range(3):
            y0, x0 = rng.integers(0, h - 4), rng.integers(0, w - 4)
            img[y0 : y0 + rng.integers(2, h - y0), x0 : x0 + rng.integers(1, 4)] = 255
        write_png(folder / f"img{i:04d}.png", img)
    return folder


@pytest.fixture(scope="module")
def cluster():
    # The workers import the example's classes as the test process does.
    examples = str(ROOT / "examples")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
             runtime_env={"env_vars": {"PYTHONPATH": examples}})
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    yield
    ray.shutdown()


def single_process(images):
    runner = repvgg.digits().runner(device="cpu")
    paths = sorted(images.glob("*.png"))
    out = runner.classify(paths, top=3)
    return {p.name: ([c.index for c in row], [c.prob for c in row]) for p, row in zip(paths, out)}


def collect(ds):
    rows = ds.take_all()
    return [(Path(r["path"]).name, list(r["top_index"]), list(r["top_prob"])) for r in rows]


def check_exactly_once(rows, want):
    names = [name for name, _, _ in rows]
    assert len(names) == N_IMAGES, f"{len(names)} rows for {N_IMAGES} images"
    assert sorted(names) == sorted(want), "some image is missing or duplicated"
    for name, index, prob in rows:
        assert index == want[name][0], name
        assert np.array_equal(np.float32(prob), np.float32(want[name][1])), name


def test_every_image_exactly_once_and_as_in_one_process(cluster, images):
    want = single_process(images)
    ds = rbi.pipeline(str(images), concurrency=2, batch_size=32, top=3, threads=1, actor_cpus=0.5)
    check_exactly_once(collect(ds), want)


def test_parquet_output(cluster, images, tmp_path):
    out = tmp_path / "out"
    rbi.pipeline(str(images), concurrency=2, batch_size=64, top=3, threads=1, actor_cpus=0.5).write_parquet(str(out))
    import pyarrow.parquet as pq

    table = pq.read_table(out)
    assert table.num_rows == N_IMAGES
    assert {"path", "top_index", "top_prob", "top_label"} <= set(table.column_names)


def test_a_killed_actor_loses_and_duplicates_nothing(cluster, images, tmp_path):
    want = single_process(images)
    marker = tmp_path / "crashed"
    ds = rbi.pipeline(str(images), concurrency=2, batch_size=32, top=3, threads=1, actor_cpus=0.5,
                      max_restarts=2, crash_marker=str(marker))
    rows = collect(ds)
    assert marker.exists(), "no actor crashed: the fault was not injected"
    check_exactly_once(rows, want)
