"""Coverage: what autocomp does with every torchvision classifier and a few Hugging Face transformers.

Each model is built without weights (torchvision: weights=None, at the input size its published weights were measured
at; transformers: small configs), in eval mode, and goes through each step on its own, so one failure leaves the rest
of the row and the table going (the error's type and first line go in the last column):

- MACs: `autocomp.measure` against the published figure, torchvision's weights meta ``_ops`` (multiply-accumulates:
  resnet50's is 4.089, as measured); for BERT-base and GPT-2 a count by hand (marked h: `bert_macs`, `gpt2_macs`); for
  the small transformers `torch.utils.flop_counter.FlopCounterMode` / 2 (marked *),
- prunable: the MACs of `autocomp.prunable_layers` (output channels prunable) over all MACs,
- keep 0.5: MACs after / before `autocomp.compress` with `Policy.uniform(layers, keep=0.5)` (output shape unchanged),
- heads: attention heads before and after (the head counts of the modules that project them),
- save/load: `autocomp.save`, `autocomp.load` and ``.eval()`` give the small model's output within 1e-4,
- export: ``torch.export`` of the small model (`autocomp.io.export_program`), its output within 1e-4,
- speed-up: median latency of the original over the small model's, batch 1, on --threads threads.

With --search, a short search (TPE, BatchNorm-recalibration scores, a few trials, baseline and fine-tune cut to a few
steps) runs for a few torchvision models built by this file's factory (`model.factory:
benchmarks.coverage:torchvision_model`) on a small Fashion-MNIST image folder (make_image_folder.py, made once).

    python benchmarks/coverage.py                                  # every model but the largest (--no-skip-large)
    python benchmarks/coverage.py --models resnet18 vit_b_16 hf_bert_base --search --record
    python benchmarks/coverage.py --models --search                # the searches alone
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TypeVar

import torch
import torchvision
from make_image_folder import check_request, make_image_folder
from results import append_section, markdown_table, print_table
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import autocomp
from autocomp.app.config import RunConfig, build_config
from autocomp.graph.attention import HeadAttention
from autocomp.graph.heads import HEAD_COUNTS
from autocomp.io import export_program

ROOT = Path(__file__).resolve().parents[1]
LARGE_GMACS = 100.0
"""--skip-large skips torchvision models whose published figure is above this (regnet_y_128gf, vit_h_14)."""
TOLERANCE = 1e-4
REPEATS = 5
VOCAB = 1000
TOKENS = 128
FACTORY = "benchmarks.coverage:torchvision_model"
SEARCH_MODELS = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2_x0_5", "convnext_tiny"]
HEADER = [
    "model",
    "input",
    "ref GMACs",
    "GMACs",
    "error",
    "prunable",
    "keep 0.5",
    "heads",
    "save/load",
    "export",
    "speed-up",
    "s",
    "errors",
]
SEARCH_HEADER = [
    "model",
    "trials",
    "failed",
    "GMACs",
    "best MACs",
    "baseline test acc",
    "best val acc",
    "best test acc",
    "wall s",
    "error",
]
T = TypeVar("T")


@dataclass(frozen=True)
class Case:
    """A model to cover: how to build it, an input, and the MACs to compare with (None: counted by FlopCounterMode),
    marked in the table by ``mark`` ('' published, 'h' by hand)."""

    name: str
    build: Callable[[], nn.Module]
    example: torch.Tensor
    reference_macs: float | None
    mark: str = ""


def torchvision_model(arch: str, num_classes: int = 1000, image_size: int | None = None) -> nn.Module:
    """torchvision's ``arch`` with fresh weights (a ViT at ``image_size``); also the searches' model factory."""
    extra = {"image_size": image_size} if arch.startswith("vit_") and image_size is not None else {}
    return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **extra)


def torchvision_case(arch: str) -> Case:
    """``arch`` at the input size of its first published weights, with their MACs."""
    weights = next(iter(torchvision.models.get_model_weights(arch)))
    size = weights.transforms.keywords.get("crop_size", 224)
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    return Case(arch, lambda: torchvision_model(arch, image_size=size), example, weights.meta["_ops"] * 1e9)


def bert_macs(config, tokens: int) -> int:
    """BERT's MACs by hand for one sequence: per layer q, k, v and the output projection (4 t h^2), the scores and
    their product with v (2 t^2 h) and the MLP (2 t h i); the pooler reads the first token (h^2), the classifier too."""
    t, h, i = tokens, config.hidden_size, config.intermediate_size
    return config.num_hidden_layers * (4 * t * h * h + 2 * t * t * h + 2 * t * h * i) + h * h + h * config.num_labels


def gpt2_macs(config, tokens: int) -> int:
    """GPT-2's MACs by hand for one sequence: per layer c_attn (3 t h^2), c_proj (t h^2), the scores and their product
    with v (2 t^2 h), the MLP (2 t h i, i = 4 h unless n_inner); the language-model head (t h vocab)."""
    t, h = tokens, config.n_embd
    inner = config.n_inner or 4 * h
    return config.n_layer * (4 * t * h * h + 2 * t * t * h + 2 * t * h * inner) + t * h * config.vocab_size


def transformers_cases() -> list[Case]:
    """BERT-base and GPT-2 (124M) from their default configs, measured against a count by hand; a ViT and a GPT-2
    classifier of small configs (hidden 128, 4 heads) against FlopCounterMode. GPT-2 runs without its key-value cache
    (``use_cache=False``: a cache grown by torch.cat cannot lose heads)."""
    import transformers as hf

    tokens = torch.randint(0, VOCAB, (1, TOKENS), generator=torch.Generator().manual_seed(0))
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    bert = hf.BertConfig(num_labels=10)
    gpt2 = hf.GPT2Config(use_cache=False)
    vit = hf.ViTConfig(
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=512,
        image_size=224,
        patch_size=16,
        num_labels=10,
    )
    small_gpt2 = hf.GPT2Config(
        vocab_size=VOCAB,
        n_positions=TOKENS,
        n_embd=128,
        n_layer=4,
        n_head=4,
        num_labels=10,
        use_cache=False,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )  # pad: for batch 2
    return [
        Case("hf_bert_base", lambda: hf.BertForSequenceClassification(bert), tokens, bert_macs(bert, TOKENS), "h"),
        Case("hf_gpt2", lambda: hf.GPT2LMHeadModel(gpt2), tokens, gpt2_macs(gpt2, TOKENS), "h"),
        Case("hf_vit_small", lambda: hf.ViTForImageClassification(vit), image, None),
        Case("hf_gpt2_small_cls", lambda: hf.GPT2ForSequenceClassification(small_gpt2), tokens, None),
    ]


def first_line(err: BaseException) -> str:
    """``Type: first line of the message``."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def attempt(errors: list[str], step: str, function: Callable[[], T]) -> T | None:
    """``function()``, or None with ``step: Type: first line`` added to ``errors`` when it raises."""
    try:
        return function()
    except Exception as err:  # anything a model can raise: the table reports it and goes on
        errors.append(f"{step}: {first_line(err)}")
        return None


def logits(output: object) -> torch.Tensor:
    """A model's output tensor (the first field of a transformers output or of a tuple)."""
    return output if isinstance(output, torch.Tensor) else output[0]


@torch.no_grad()
def difference(model: nn.Module, reference: nn.Module, x: torch.Tensor) -> float:
    """The largest absolute difference between the two models' outputs on ``x``."""
    return float((logits(model(x)) - logits(reference(x))).abs().max())


def counted_macs(model: nn.Module, x: torch.Tensor) -> float:
    """Half the FLOPs FlopCounterMode counts in one forward pass (matmuls and attention included)."""
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(x)  # the math kernel's matmuls are counted, the fused CPU kernel's are not
    return counter.get_total_flops() / 2


@torch.no_grad()
def compressed(model: nn.Module, layers: list, x: torch.Tensor) -> nn.Module:
    """``model`` with half the channels of every prunable layer; AssertionError when its output shape changes."""
    small = autocomp.compress(model, autocomp.Policy.uniform(layers, keep=0.5), x).eval()
    before, after = logits(model(x)).shape, logits(small(x)).shape
    assert before == after, f"output shape {tuple(after)}, not {tuple(before)}"
    return small


def attention_heads(model: nn.Module) -> int:
    """The heads of every attention module that projects them itself (a Linear or Hugging Face Conv1D child); an
    nn.MultiheadAttention autocomp unpacked (graph.attention) has as many as its projections' width holds."""
    total = 0
    for module in model.modules():
        if isinstance(module, HeadAttention):
            total += module.q_proj.out_features // module.head_dim
            continue
        projects = any(isinstance(child, nn.Linear) or type(child).__name__ == "Conv1D" for child in module.children())
        count = next((getattr(module, name) for name in HEAD_COUNTS if type(getattr(module, name, None)) is int), 0)
        total += count if projects else 0
    return total


def save_load(small: nn.Module, x: torch.Tensor) -> str:
    """``ok`` when the model saved and loaded again computes what ``small`` does, else the difference."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.pt"
        autocomp.save(small, path, x)
        loaded = autocomp.load(path).eval()
    return verdict(difference(loaded, small, x))


def exported(small: nn.Module, x: torch.Tensor) -> str:
    """``ok`` when ``small``'s torch.export program computes what it does, else the difference."""
    return verdict(difference(export_program(small, x).module(), small, x))


def verdict(diff: float) -> str:
    return "ok" if diff <= TOLERANCE else f"diff {diff:.1e}"


@torch.no_grad()
def speedup(model: nn.Module, small: nn.Module, x: torch.Tensor, repeats: int = REPEATS) -> float:
    """Median latency of ``model`` over ``small``'s on ``x``; they take turns after one warm-up pass each."""
    times: dict[nn.Module, list[float]] = {model: [], small: []}
    for each in times:
        each(x)
    for _ in range(repeats):
        for each, seconds in times.items():
            start = time.perf_counter()
            each(x)
            seconds.append(time.perf_counter() - start)
    return statistics.median(times[model]) / statistics.median(times[small])


def number(value: float | None, spec: str) -> str:
    """``value`` formatted, or - when missing (a failed step, or one after it)."""
    return "-" if value is None else format(value, spec)


def giga(value: float | None) -> str:
    return number(None if value is None else value / 1e9, ".4g")


def describe_input(x: torch.Tensor) -> str:
    return f"{x.shape[1]} tokens" if x.dim() == 2 else "x".join(map(str, x.shape[1:]))


def coverage_row(case: Case) -> list[str]:
    """``case``'s row of `HEADER`: each step attempted when the ones it needs succeeded."""
    started, errors, x = time.perf_counter(), [], case.example
    torch.manual_seed(0)
    model = attempt(errors, "build", lambda: case.build().eval())
    reference = case.reference_macs
    macs = layers = small = share = kept = heads = saved = export = speed = None
    if model is not None:
        if reference is None:
            reference = attempt(errors, "FlopCounterMode", lambda: counted_macs(model, x))
        macs = attempt(errors, "measure", lambda: autocomp.measure(model, x).macs)
        layers = attempt(errors, "prunable", lambda: autocomp.prunable_layers(model, x))
    if layers is not None:
        share = sum(layer.macs for layer in layers) / macs if macs else None
        small = attempt(errors, "compress", lambda: compressed(model, layers, x))
    if small is not None:
        kept = attempt(errors, "measure small", lambda: autocomp.measure(small, x).macs / macs if macs else None)
        before = attention_heads(model)
        heads = f"{before} -> {attention_heads(small)}" if before else ""
        saved = attempt(errors, "save/load", lambda: save_load(small, x))
        export = attempt(errors, "export", lambda: exported(small, x))
        speed = attempt(errors, "speed-up", lambda: speedup(model, small, x))
    error = None if reference is None or macs is None else (macs - reference) / reference
    mark = "*" if case.reference_macs is None else case.mark
    return [
        case.name,
        describe_input(x),
        giga(reference) + mark,
        giga(macs),
        number(error, "+.1%"),
        number(share, ".1%"),
        number(kept, ".1%"),
        heads or "-",
        saved or "-",
        export or "-",
        number(speed, ".2f"),
        f"{time.perf_counter() - started:.0f}",
        "; ".join(errors),
    ]


def skipped_row(case: Case) -> list[str]:
    """The row of a model --skip-large leaves out, saying why."""
    gmacs = case.reference_macs / 1e9
    return [
        case.name,
        describe_input(case.example),
        f"{gmacs:.4g}",
        *["-"] * 9,
        f"skipped: over {LARGE_GMACS:.0f} GMACs (--no-skip-large runs it)",
    ]


def cases(names: list[str] | None) -> list[Case]:
    """The named cases (None: all), torchvision's first; unknown names end the script with the allowed ones."""
    every = torchvision.models.list_models(module=torchvision.models)
    hf = {case.name: case for case in transformers_cases()}
    wanted = every + list(hf) if names is None else names
    unknown = [name for name in wanted if name not in every and name not in hf]
    if unknown:
        sys.exit(f"coverage.py: unknown model {unknown[0]!r}; allowed: {', '.join(every + list(hf))}.")
    return [hf[name] if name in hf else torchvision_case(name) for name in wanted]


def _child_row(name: str, threads: int, sender: Connection) -> None:
    """In a child process: ``name``'s row, sent to the parent."""
    warnings.simplefilter("ignore")
    torch.set_num_threads(threads)
    sender.send(coverage_row(cases([name])[0]))


def resident_gb(pid: int) -> float:
    """The resident memory of process ``pid`` in GB (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    kilobytes = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return kilobytes / 1e6


def isolated_row(case: Case, args: argparse.Namespace) -> list[str]:
    """``case``'s row computed in a child process, killed if it holds more than --max-memory-gb (one model's bug must
    not take the machine's memory and the rest of the table with it)."""
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child_row, args=(case.name, args.threads, sender))
    started = time.perf_counter()
    child.start()
    sender.close()
    reason = None
    while not receiver.poll(0.5):
        if not child.is_alive():
            reason = f"the child process exited with code {child.exitcode}"
            break
        if resident_gb(child.pid) > args.max_memory_gb:
            child.kill()
            reason = f"killed: held over {args.max_memory_gb:g} GB of memory"
            break
    row = receiver.recv() if reason is None else None
    child.join()
    if row is not None:
        return row
    return [
        case.name,
        describe_input(case.example),
        giga(case.reference_macs),
        *["-"] * 8,
        f"{time.perf_counter() - started:.0f}",
        reason,
    ]


def coverage_table(args: argparse.Namespace) -> list[list[str]]:
    """Every chosen model's row, each printed as soon as it is done and kept in --runs-root's rows.json, from which a
    run interrupted goes on (--fresh: every row again)."""
    saved = Path(args.runs_root) / "rows.json"
    done = {} if args.fresh or not saved.exists() else json.loads(saved.read_text())
    rows = []
    for case in cases(args.models):
        large = case.reference_macs is not None and case.reference_macs / 1e9 > LARGE_GMACS
        if args.skip_large and large:
            row = skipped_row(case)  # not kept: a later run with --no-skip-large measures it
        elif case.name in done:
            row = done[case.name]
        else:
            row = done[case.name] = isolated_row(case, args)
            saved.parent.mkdir(parents=True, exist_ok=True)
            saved.with_suffix(".tmp").write_text(json.dumps(done, indent=0))
            saved.with_suffix(".tmp").replace(saved)
        print(" | ".join(f"{name}: {cell}" for name, cell in zip(HEADER, row)), flush=True)
        rows.append(row)
    return rows


def search_config(arch: str, folder: Path, args: argparse.Namespace) -> RunConfig:
    """A short search of ``arch`` (this file's factory) on the image folder at ``folder``, at most half the MACs."""
    return build_config(
        {
            "model": {"factory": FACTORY, "kwargs": {"arch": arch}},
            "data": {"name": "image_folder", "dir": str(folder), "val_size": 100},
            "baseline": {"epochs": 1, "batch_size": 32, "lr": 0.02, "max_steps": args.baseline_steps},
            "constraints": [{"metric": "macs", "max": 0.5}],
            "search": {"agent": "tpe", "trials": args.trials},
            "evaluator": {"fidelity": "bn", "bn_batches": 2, "batch_size": 50, "val_examples": 100},
            "finetune": {"epochs": 1, "batch_size": 32, "max_steps": args.finetune_steps},
            "threads": args.threads,
            "device": "cpu",
        },
        source="coverage.py search",
    )


def search_row(arch: str, folder: Path, args: argparse.Namespace) -> list[str]:
    """``arch``'s row of `SEARCH_HEADER`: trials, the best model's MACs share and accuracy, wall time (the baseline's
    training included)."""
    run = Path(args.runs_root) / arch
    shutil.rmtree(run, ignore_errors=True)
    started = time.perf_counter()
    try:
        report = autocomp.search(search_config(arch, folder, args), out=run).report
    except Exception as err:  # a model the search cannot take: reported, and the next one runs
        return [arch, *["-"] * 7, f"{time.perf_counter() - started:.0f}", first_line(err)]
    base, best = report.baseline, report.best
    return [
        arch,
        str(report.trials),
        str(report.failed_trials),
        f"{base.macs / 1e9:.4f}",
        f"{best.macs / base.macs:.1%}",
        f"{base.test_accuracy:.1%}",
        f"{best.val_accuracy:.1%}",
        f"{best.test_accuracy:.1%}",
        f"{time.perf_counter() - started:.0f}",
        "",
    ]


def search_table(args: argparse.Namespace) -> list[list[str]]:
    """The image folder (made once), then one short search per --search-models model."""
    folder = Path(args.data_dir)
    try:
        check_request(folder, args.train_images, args.test_images, args.image_size, 1)
        make_image_folder(folder, args.train_images, args.test_images, args.image_size, workers=1)
    except ValueError as err:  # a bad request, or no Fashion-MNIST (apt-get install dataset-fashion-mnist)
        sys.exit(f"coverage.py: {err}")
    if str(ROOT) not in sys.path:  # the factory's import path starts at the repository's root
        sys.path.insert(0, str(ROOT))
    rows = []
    for arch in args.search_models:
        rows.append(search_row(arch, folder, args))
        print(" | ".join(f"{name}: {cell}" for name, cell in zip(SEARCH_HEADER, rows[-1])), flush=True)
    return rows


def record(args: argparse.Namespace, rows: list[list[str]], searches: list[list[str]]) -> None:
    """Append the tables to RESULTS.md with what they measure."""
    body = []
    if rows:
        body += [
            f"Each model without weights, in eval mode, batch 1 (torchvision at its published weights' input size; "
            f"BERT-base and GPT-2 from their default configs, a ViT and a GPT-2 classifier of hidden 128, 4 heads and 4 layers, {TOKENS} tokens). ref GMACs: torchvision's "
            "published `_ops` (MACs), * FlopCounterMode / 2; error: `autocomp.measure` against it; prunable: "
            "MACs of `prunable_layers` over all; keep 0.5: MACs after `Policy.uniform(layers, keep=0.5)`; "
            "heads: attention heads before -> after; "
            f"save/load and export: outputs within {TOLERANCE}; speed-up: median latency original / small "
            f"({REPEATS} turns, {args.threads} threads); s: the row's seconds.",
            "",
            *markdown_table(HEADER, rows),
            "",
        ]
    if searches:
        body += [
            f"Searches: TPE, {args.trials} trials, BatchNorm-recalibration scores, at most 50% of the MACs, "
            f"baseline {args.baseline_steps} steps (lr 0.02) and fine-tune {args.finetune_steps} steps of 32, on "
            f"{args.train_images} training and {args.test_images} test images of Fashion-MNIST at "
            f"{args.image_size}x{args.image_size} RGB; wall s includes the baseline's training.",
            "",
            *markdown_table(SEARCH_HEADER, searches),
            "",
        ]
    append_section("Coverage: torchvision and Hugging Face models", "python " + shlex.join(sys.argv), body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="*",
        default=None,
        help="torchvision names and hf_bert_base, hf_gpt2, hf_vit_small, hf_gpt2_small_cls (default: all; "
        "none given: no coverage table)",
    )
    parser.add_argument(
        "--skip-large",
        action=argparse.BooleanOptionalAction,
        default=True,
        help=f"skip models of more than {LARGE_GMACS:.0f} published GMACs (regnet_y_128gf, vit_h_14)",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-memory-gb", type=float, default=16.0, help="kill a model's step above this (GB)")
    parser.add_argument("--fresh", action="store_true", help="compute every row again (else rows.json's are kept)")
    parser.add_argument("--search", action="store_true", help="also run the short searches")
    parser.add_argument("--search-models", nargs="+", default=SEARCH_MODELS)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--baseline-steps", type=int, default=200)
    parser.add_argument("--finetune-steps", type=int, default=10)
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--test-images", type=int, default=200)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--data-dir", default="benchmarks/data/fmnist64", help="where the image folder is made")
    parser.add_argument("--runs-root", default="runs/coverage", help="where the searches' run folders go")
    parser.add_argument("--record", action="store_true", help="append the tables to benchmarks/RESULTS.md")
    args = parser.parse_args()

    warnings.simplefilter("ignore")  # builders' and the exporter's warnings would bury the rows
    torch.set_num_threads(args.threads)
    rows = coverage_table(args) if args.models != [] else []
    searches = search_table(args) if args.search else []
    if rows:
        print_table(HEADER, rows)
        print("h: counted by hand; *: FlopCounterMode / 2 (no published figure)")
    if searches:
        print_table(SEARCH_HEADER, searches)
    if args.record:
        record(args, rows, searches)


if __name__ == "__main__":
    main()
