"""Full-size images: peak memory and speed of a short search on 224x224 RGB image folders of growing size.

For each training-set size: a generated image folder of Fashion-MNIST, tinted and resized (make_image_folder.py;
made once, then reused), a MobileNetV2 checkpoint of seeded initial weights (so no baseline is trained) and a short
`autocomp search` of configs/imagefolder_mobilenet_v2.yaml in a subprocess. While it runs, the resident memory
(VmRSS) and proportional memory (PSS) of its process tree, DataLoader workers included, are sampled every 0.2 s. The
goal: the tree's peak PSS under 3 GB at every size, and within 300 MB from one size to another (memory that does not
grow with the data set). PSS splits each page that forked workers share with the search among them, so it sums to
the memory the tree really holds; the RSS sum, shown beside it, counts a shared page once per process.

    python benchmarks/full_size.py                                      # 5000 and 20000 images, CPU, fp32
    python benchmarks/full_size.py --device cuda --precision bf16 --record
    python benchmarks/full_size.py --train-sizes 1000 --trials 2 --keep
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from make_image_folder import check_request, make_image_folder
from results import append_section, markdown_table, print_table

from autocomp import zoo
from autocomp.app.report import Report, load_report

CONFIG = "configs/imagefolder_mobilenet_v2.yaml"
SHORT = {  # flag: (config key, default), each passed to the search as --set KEY=VALUE
    "--trials": ("search.trials", 4),
    "--proxy-steps": ("evaluator.steps", 10),
    "--proxy-batch-size": ("evaluator.proxy.batch_size", 16),
    "--bn-batches": ("evaluator.bn_batches", 4),
    "--eval-batch-size": ("evaluator.batch_size", 32),
    "--val-examples": ("evaluator.val_examples", 256),
    "--val-size": ("data.val_size", 500),
    "--finetune-steps": ("finetune.max_steps", 20),
    "--finetune-batch-size": ("finetune.batch_size", 16),
    "--data-workers": ("data.workers", 1),
    "--cache-mb": ("evaluator.cache_mb", 512),
    "--device": ("device", "cpu"),
    "--precision": ("precision", "fp32"),
}
SAMPLE_SECONDS = 0.2
PEAK_GOAL_MB = 3 * 1024
SPREAD_GOAL_MB = 300
HEADER = [
    "train images",
    "peak RSS tree (MB)",
    "peak RSS main (MB)",
    "peak PSS tree (MB)",
    "train img/s",
    "score img/s",
    "s per candidate",
    "wall s",
    "device",
]


@dataclass
class Peaks:
    """The highest memory seen, in MB (2**20 bytes): resident (VmRSS) summed over the process tree, of its root alone,
    and proportional (PSS: a page shared by k processes counts 1/k in each) summed over the tree."""

    tree_mb: float = 0.0
    main_mb: float = 0.0
    tree_pss_mb: float = 0.0


def parent_pids() -> dict[int, int]:
    """Every process's parent, from /proc/*/stat (processes that end meanwhile are left out)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])  # the name, in (), may hold spaces
    return parents


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    children: dict[int, list[int]] = {}
    for pid, parent in parent_pids().items():
        children.setdefault(parent, []).append(pid)
    tree, index = [root], 0
    while index < len(tree):
        tree += children.get(tree[index], [])
        index += 1
    return tree


def proc_mb(path: str, field: str) -> float:
    """The ``field: N kB`` line of the /proc file at ``path``, in MB; 0 when the process has ended (or lacks it)."""
    try:
        with open(path) as lines:
            for line in lines:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def resident_mb(pid: int) -> float:
    """The process's resident memory (VmRSS) in MB."""
    return proc_mb(f"/proc/{pid}/status", "VmRSS:")


def proportional_mb(pid: int) -> float:
    """The process's proportional set size (PSS) in MB: a page shared by k processes counts 1/k in each."""
    return proc_mb(f"/proc/{pid}/smaps_rollup", "Pss:")


def run_sampled(command: list[str], log: Path, interval: float = SAMPLE_SECONDS) -> tuple[int, Peaks]:
    """Run ``command`` (its output to ``log``), sampling its process tree's memory every ``interval`` s; its exit
    code and the peaks."""
    peaks = Peaks()
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
        while process.poll() is None:
            tree = process_tree(process.pid)
            sizes = [resident_mb(pid) for pid in tree]
            peaks.tree_mb = max(peaks.tree_mb, sum(sizes))
            peaks.main_mb = max(peaks.main_mb, sizes[0])
            peaks.tree_pss_mb = max(peaks.tree_pss_mb, sum(proportional_mb(pid) for pid in tree))
            time.sleep(interval)
    return process.returncode, peaks


def write_checkpoint(path: Path) -> Path:
    """A state dict of MobileNetV2's seeded initial weights at ``path`` (written once, then reused)."""
    if not path.exists():
        torch.manual_seed(0)
        model = zoo.create("mobilenet_v2", num_classes=10, in_channels=3, small_input=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.part")
        torch.save(model.state_dict(), partial)
        os.replace(partial, path)
    return path


def dest(flag: str) -> str:
    """The argparse attribute of ``flag``."""
    return flag.removeprefix("--").replace("-", "_")


def short_settings(args: argparse.Namespace) -> list[str]:
    """``KEY=VALUE`` for each of `SHORT`, as the flags set them."""
    return [f"{key}={getattr(args, dest(flag))}" for flag, (key, _) in SHORT.items()]


def overrides(args: argparse.Namespace, folder: Path, checkpoint: Path) -> list[str]:
    """The search's ``--set`` values: the data folder, the checkpoint, the short settings and the user's own."""
    return [f"data.dir={folder}", f"model.checkpoint={checkpoint}", *short_settings(args), *args.set]


def search_command(config: str, run: Path, settings: list[str]) -> list[str]:
    """`autocomp search` of ``config`` into ``run`` with ``settings``, by this interpreter (whichever venv it is)."""
    return [
        sys.executable,
        "-m",
        "autocomp.app.cli",
        "search",
        "--config",
        config,
        "--out",
        str(run),
        *(part for setting in settings for part in ("--set", setting)),
    ]


def number(value: float | None, spec: str) -> str:
    """``value`` formatted, or n/a where the run measured none."""
    return "n/a" if value is None else format(value, spec)


def table_row(size: int, peaks: Peaks, report: Report) -> list[str]:
    """One row of `HEADER` from the peaks and the run's report."""
    runtime = report.runtime
    return [
        str(size),
        f"{peaks.tree_mb:.0f}",
        f"{peaks.main_mb:.0f}",
        f"{peaks.tree_pss_mb:.0f}",
        number(runtime.train_images_per_second, ".0f"),
        number(runtime.score_images_per_second, ".0f"),
        f"{report.evaluator.seconds_per_evaluation:.2f}",
        f"{report.wall_seconds:.0f}",
        f"{runtime.device}/{runtime.precision}",
    ]


def goal_lines(tree_peaks: list[float]) -> list[str]:
    """PASS or FAIL for each goal: the tree's peak PSS under 3 GB, and the same within 300 MB across sizes."""
    highest, spread = max(tree_peaks), max(tree_peaks) - min(tree_peaks)
    verdict = {True: "PASS", False: "FAIL"}
    spread_line = (
        f"{verdict[spread <= SPREAD_GOAL_MB]} ({spread:.0f} MB)" if len(tree_peaks) > 1 else "n/a (one size only)"
    )
    return [
        f"Peak PSS of the process tree under {PEAK_GOAL_MB} MB at every size: "
        f"{verdict[highest < PEAK_GOAL_MB]} (highest {highest:.0f} MB).",
        f"Difference in that peak between the sizes within {SPREAD_GOAL_MB} MB: {spread_line}.",
    ]


def data_folder(args: argparse.Namespace, size: int) -> Path:
    """The generated folder of ``size`` training images: DATA_ROOT/<its name>-<size>."""
    root = Path(args.data_root)
    return root / f"{root.name}-{size}"


def make_folders(args: argparse.Namespace) -> None:
    """Make (or complete) every size's folder, each request checked before any image is written."""
    for size in args.train_sizes:
        check_request(data_folder(args, size), size, args.test, args.size, args.make_workers)
    for size in args.train_sizes:
        folder = data_folder(args, size)
        made = make_image_folder(folder, size, args.test, args.size, args.make_workers)
        print(
            f"{folder}: {made.counts['train']} train and {made.counts['test']} test images "
            f"({made.written} written now), {made.total_bytes / 2**20:.1f} MB",
            flush=True,
        )


def measure(args: argparse.Namespace, size: int, checkpoint: Path) -> tuple[list[str], Peaks]:
    """Run the short search on the folder of ``size`` training images; its table row and memory peaks."""
    run, log = Path(args.runs_root) / f"train-{size}", Path(args.runs_root) / f"train-{size}.log"
    if not args.keep:
        shutil.rmtree(run, ignore_errors=True)
    run.parent.mkdir(parents=True, exist_ok=True)
    command = search_command(args.config, run, overrides(args, data_folder(args, size), checkpoint))
    print(f"searching ({size} images), log {log}: {shlex.join(command)}", flush=True)
    code, peaks = run_sampled(command, log)
    if code != 0:
        sys.stderr.writelines(log.read_text().splitlines(keepends=True)[-30:])
        sys.exit(f"full_size.py: the search on {size} images failed with exit code {code}; its output is in {log}.")
    row = table_row(size, peaks, load_report(run))
    print(", ".join(f"{name}: {cell}" for name, cell in zip(HEADER, row)), flush=True)
    return row, peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-sizes", type=int, nargs="+", default=[5000, 20000], help="training images per run")
    parser.add_argument("--test", type=int, default=500, help="test images in each folder")
    parser.add_argument("--size", type=int, default=224, help="side of the square images, in pixels")
    parser.add_argument("--make-workers", type=int, default=2, help="processes writing a folder's images")
    parser.add_argument("--data-root", default="benchmarks/data/fmnist224", help="where the folders are made")
    parser.add_argument("--runs-root", default="runs/full_size", help="where the run folders and logs go")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep a run folder already there (its run resumes) instead of deleting it first",
    )
    parser.add_argument("--config", default=CONFIG)
    for flag, (key, default) in SHORT.items():
        parser.add_argument(flag, type=type(default), default=default, help=f"--set {key}= (default {default})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any other config override")
    parser.add_argument("--record", action="store_true", help="append the table to benchmarks/RESULTS.md")
    args = parser.parse_args()

    try:
        make_folders(args)
    except ValueError as err:  # a bad request, or no Fashion-MNIST: one sentence
        print(f"full_size.py: {err}", file=sys.stderr)
        sys.exit(2)
    checkpoint = write_checkpoint(Path(args.data_root) / "mobilenet_v2-seed0.pt")
    measured = [measure(args, size, checkpoint) for size in args.train_sizes]
    rows = [row for row, _ in measured]
    goals = goal_lines([peaks.tree_pss_mb for _, peaks in measured])
    print_table(HEADER, rows)
    print("\n".join(goals))
    if args.record:
        settings = ", ".join([*short_settings(args), *args.set])
        append_section(
            "Full-size images: memory and speed of a short search",
            "python " + shlex.join(sys.argv),
            [
                f"MobileNetV2 (seeded initial weights, no baseline training), `{args.config}` on generated image folders: "
                f"Fashion-MNIST tinted and resized to {args.size}x{args.size} RGB JPEG, the first N training images and "
                f"{args.test} test images; {settings}. Peak RSS: VmRSS sampled every {SAMPLE_SECONDS} s, of the search "
                "process alone and summed over its process tree (DataLoader workers included; pages they share count "
                "once per process); PSS: the same sum with each shared page split among its processes. Speeds and "
                "seconds per candidate from the run's report.json.",
                "",
                *markdown_table(HEADER, rows),
                "",
                *goals,
                "",
            ],
        )


if __name__ == "__main__":
    main()
