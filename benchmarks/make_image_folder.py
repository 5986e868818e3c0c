"""Write a full-size image folder without any download: Fashion-MNIST, tinted and resized, as JPEG files.

Each 28x28 grey image becomes a SIZE x SIZE RGB image: its object in one colour and its background in another, both
drawn from the image's split and index by a seeded numpy Generator (so the three channels differ and repeats of a
source image, beyond Fashion-MNIST's 60000 training or 10000 test images, differ in colour). Files go to
``OUT/train/<class>/<index>.jpg`` and ``OUT/test/<class>/<index>.jpg``, the layout `autocomp.data.load_image_folder`
reads. A file that exists is not written again and every file is written under a temporary name and then renamed, so
an interrupted run is resumed by running the same command again.

    python benchmarks/make_image_folder.py --out benchmarks/data/fmnist224/fmnist224-5000
    python benchmarks/make_image_folder.py --out /tmp/small --train 200 --test 50 --size 64
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autocomp.data import find_fashion_mnist, read_idx

CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot")
SOURCES = {"train": "train", "test": "t10k"}
"""Each split of the folder and the prefix of the Fashion-MNIST IDX files it is made from."""
SETTINGS_FILE = "generator.json"
JPEG_QUALITY = 90
CHUNK = 200
PROGRESS_SECONDS = 5.0


@dataclass(frozen=True)
class Chunk:
    """Images for one worker to write: their files, 28x28 sources and tint seeds."""

    paths: list[Path]
    sources: np.ndarray
    seeds: list[tuple[int, int]]
    size: int


@dataclass(frozen=True)
class Summary:
    """What a call wrote, what it found there already, and what the folder holds now."""

    written: int
    kept: int
    counts: dict[str, int]
    """Images now in each split's folder."""
    total_bytes: int


def check_request(out: Path, train: int, test: int, size: int, workers: int) -> None:
    """Raise ValueError (one sentence) for a request that cannot be met."""
    for what, value, least in (
        ("training images", train, 1),
        ("test images", test, 1),
        ("the image side (pixels)", size, 8),
        ("worker processes", workers, 1),
    ):
        if value < least:
            raise ValueError(f"{what}: {value} is too few; give at least {least}.")
    existing = next(path for path in (out.absolute(), *out.absolute().parents) if path.exists())
    if not existing.is_dir():
        raise ValueError(f"{existing} exists and is not a folder, so no image folder can be made there.")
    settings = out / SETTINGS_FILE
    made = json.loads(settings.read_text())["size"] if settings.is_file() else size
    if made != size:
        raise ValueError(f"{out} holds images of size {made}, not {size}; choose another folder or delete that one.")


def idx_file(folder: Path, name: str) -> Path:
    """``folder/name``, else ``folder/name.gz``."""
    raw = folder / name
    return raw if raw.is_file() else folder / f"{name}.gz"


def read_split(folder: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """The N x 28 x 28 images and N labels of one Fashion-MNIST split (``train`` or ``t10k``)."""
    return (
        read_idx(idx_file(folder, f"{prefix}-images-idx3-ubyte")),
        read_idx(idx_file(folder, f"{prefix}-labels-idx1-ubyte")),
    )


def tinted(grey: np.ndarray, seed: tuple[int, int]) -> np.ndarray:
    """``grey`` (H x W bytes) as H x W x 3 bytes: the object (bright) in one colour, the background in a dark other."""
    rng = np.random.default_rng(seed)
    foreground, background = rng.uniform(0.4, 1.0, 3), rng.uniform(0.0, 0.2, 3)
    weight = grey[..., None].astype(np.float32) / 255
    return np.round(255 * (weight * foreground + (1 - weight) * background)).astype(np.uint8)


def write_chunk(chunk: Chunk) -> int:
    """Write the chunk's images (tinted, resized, JPEG) under temporary names, then rename them; how many."""
    from PIL import Image

    for path, grey, seed in zip(chunk.paths, chunk.sources, chunk.seeds):
        image = Image.fromarray(tinted(grey, seed), "RGB").resize((chunk.size, chunk.size), Image.Resampling.BICUBIC)
        partial = path.with_name(f".{path.name}.part")  # a leftover of an interrupted run is overwritten here
        image.save(partial, format="JPEG", quality=JPEG_QUALITY)
        os.replace(partial, path)
    return len(chunk.paths)


def missing_chunks(
    out: Path, split: str, count: int, images: np.ndarray, labels: np.ndarray, size: int
) -> tuple[list[Chunk], int]:
    """Chunks of the first ``count`` images of ``split`` not yet on disk (sources repeat past the last), and how
    many are there already."""
    number = list(SOURCES).index(split)
    todo = []
    for index in range(count):
        path = out / split / CLASSES[labels[index % len(labels)]] / f"{index}.jpg"
        if not path.exists():
            todo.append((index, path))
    for folder in {path.parent for _, path in todo}:  # only classes with images: the loader refuses empty ones
        folder.mkdir(parents=True, exist_ok=True)
    chunks = [
        Chunk(
            [path for _, path in part],
            images[[index % len(images) for index, _ in part]],
            [(number, index) for index, _ in part],
            size,
        )
        for part in (todo[start : start + CHUNK] for start in range(0, len(todo), CHUNK))
    ]
    return chunks, count - len(todo)


def folder_size(out: Path) -> tuple[dict[str, int], int]:
    """JPEG files in each split's folder, and the bytes of every file under ``out``."""
    counts = {split: sum(1 for _ in (out / split).glob("*/*.jpg")) for split in SOURCES}
    return counts, sum(path.stat().st_size for path in out.rglob("*") if path.is_file())


def progress(done: Iterator[int], total: int) -> int:
    """Consume ``done`` (images per finished chunk), printing images written per second every few seconds."""
    written, started, shown = 0, time.perf_counter(), time.perf_counter()
    for count in done:
        written += count
        now = time.perf_counter()
        if now - shown >= PROGRESS_SECONDS:
            print(f"{written}/{total} images written, {written / (now - started):.0f} images/s", flush=True)
            shown = now
    return written


def make_image_folder(out: Path, train: int = 5000, test: int = 1000, size: int = 224, workers: int = 2) -> Summary:
    """Write whatever of the folder is missing (see the module docstring)."""
    check_request(out, train, test, size, workers)
    source = find_fashion_mnist()
    chunks, kept = [], 0
    for split, count in (("train", train), ("test", test)):
        images, labels = read_split(source, SOURCES[split])
        split_chunks, split_kept = missing_chunks(out, split, count, images, labels, size)
        chunks += split_chunks
        kept += split_kept
    out.mkdir(parents=True, exist_ok=True)
    (out / SETTINGS_FILE).write_text(json.dumps({"source": "fashion-mnist", "size": size}) + "\n")
    total = sum(len(chunk.paths) for chunk in chunks)
    with multiprocessing.Pool(workers) as pool:
        written = progress(pool.imap_unordered(write_chunk, chunks), total)
    counts, total_bytes = folder_size(out)
    return Summary(written, kept, counts, total_bytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the folder to write (train/ and test/ inside)")
    parser.add_argument(
        "--train", type=int, default=5000, help="training images: the first N (past 60000, again in other colours)"
    )
    parser.add_argument("--test", type=int, default=1000, help="test images: the first M (past 10000, again)")
    parser.add_argument("--size", type=int, default=224, help="side of the square images, in pixels")
    parser.add_argument("--workers", type=int, default=2, help="processes writing images")
    args = parser.parse_args()
    try:
        summary = make_image_folder(args.out, args.train, args.test, args.size, args.workers)
    except ValueError as err:
        print(f"make_image_folder.py: {err}", file=sys.stderr)
        sys.exit(2)
    print(
        f"{args.out}: {summary.counts['train']} train and {summary.counts['test']} test images of "
        f"{args.size}x{args.size} ({summary.written} written now, {summary.kept} already there), "
        f"{summary.total_bytes / 2**20:.1f} MB"
    )


if __name__ == "__main__":
    main()
