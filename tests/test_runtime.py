"""Real workloads: the device and precision setting, data read from disk through DataLoader, the lazy image folder."""

from __future__ import annotations

import json
import textwrap
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset, TensorDataset

import autocomp
from autocomp.app.config import build_config
from autocomp.data import BatchReader, as_tensors, load_dataset, load_image_folder
from autocomp.data.image_folder import ImageFolderData
from autocomp.errors import ConfigError
from autocomp.evaluate import (
    Evaluator,
    EvaluatorSettings,
    Fidelity,
    ProxyTraining,
    accuracy,
)
from autocomp.runtime import Runtime, resolve_device
from autocomp.train import TrainSettings, train

NO_CUDA = not torch.cuda.is_available()
TINY = {
    "model": {"name": "resnet20"},
    "data": {"name": "digits", "val_size": 300},
    "baseline": {"epochs": 2, "batch_size": 64, "lr": 0.1},
    "constraints": [{"metric": "macs", "max": 0.5}],
    "search": {"agent": "tpe", "trials": 4, "reference": False},
    "evaluator": {
        "fidelity": "proxy",
        "steps": 8,
        "proxy": {"batch_size": 64},
        "bn_batches": 3,
        "batch_size": 128,
        "val_examples": 300,
    },
    "finetune": {"epochs": 1, "batch_size": 64, "lr": 0.05},
    "device": "cpu",
}
RECORDED = {  # this search's report before devices, DataLoader and lazy data existed (commit db35c98)
    "baseline": [0.9633333333333334, 0.9498607242339833],
    "history": [0.8633333333333333, 0.8366666666666667, 0.85, 0.6733333333333333],
    "best": [0.9033333333333333, 0.9192200557103064],  # fine-tuned val and test accuracy
}
"""Bit for bit on the CPU that recorded it only: other CPUs (AVX-512 against AVX2 kernels) and thread timings round
sums differently, which moves a 300-image accuracy by a few images; hence the tolerances below."""


def test_a_cpu_search_gives_the_result_recorded_before_devices_existed(tmp_path):
    report = autocomp.search(build_config(TINY), tmp_path / "run").report
    baseline, best, runtime = report.baseline, report.best, report.runtime
    assert [baseline.val_accuracy, baseline.test_accuracy] == pytest.approx(RECORDED["baseline"], abs=0.02)
    history = [h.val_accuracy for h in report.history]
    assert np.mean(history) == pytest.approx(np.mean(RECORDED["history"]), abs=0.05)
    assert [best.finetuned_val_accuracy, best.test_accuracy] == pytest.approx(RECORDED["best"], abs=0.05)
    assert best.macs <= 0.5 * baseline.macs
    assert runtime.device == "cpu" and runtime.precision == "fp32"
    assert (runtime.train_images_per_second or 0) > 0 and (runtime.score_images_per_second or 0) > 0


COUNTING_SOURCE = textwrap.dedent('''
    import os
    from collections import Counter

    import torch
    from torch.utils.data import Dataset, IterableDataset

    from autocomp.data import as_tensors, load_dataset

    READS = Counter()


    class Counted(Dataset):
        """Digits as a map-style data set read item by item (as from disk), counting the reads of each index."""

        def __init__(self, images, labels, name):
            self.images, self.labels, self.name = images, labels, name

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, index):
            READS[self.name, index] += 1
            if "COUNT_FILE" in os.environ:  # reads in DataLoader worker processes are counted there too
                with open(os.environ["COUNT_FILE"], "a") as file:
                    file.write(f"{self.name} {index}\\n")
            return self.images[index], int(self.labels[index])


    class Stream(IterableDataset):
        def __init__(self, images, labels):
            self.images, self.labels = images, labels

        def __len__(self):
            return len(self.labels)

        def __iter__(self):
            return ((self.images[i], int(self.labels[i])) for i in range(len(self.labels)))


    def digits(kind="map", **_):
        data = load_dataset("digits", val_size=1)  # the whole training split, as tensors
        train = as_tensors(torch.utils.data.ConcatDataset([data.train, data.val]))
        test = as_tensors(data.test)
        if kind == "tensors":
            return torch.utils.data.TensorDataset(*train), torch.utils.data.TensorDataset(*test), 10
        if kind == "loader":
            return torch.utils.data.DataLoader(Counted(*train, "train")), Counted(*test, "test"), 10
        if kind == "stream":
            return Stream(*train), Stream(*test), 10
        return Counted(*train, "train"), Counted(*test, "test"), 10
''')


@pytest.fixture()
def counted(user_module, tmp_path):
    module = user_module("counted_digits", COUNTING_SOURCE)
    torch.manual_seed(0)
    checkpoint = tmp_path / "resnet20.pt"
    torch.save(autocomp.zoo.create("resnet20", num_classes=10, in_channels=1).state_dict(), checkpoint)
    return module, checkpoint


def counted_config(checkpoint, kind="map", **changes):
    config = {
        **TINY,
        "model": {"name": "resnet20", "checkpoint": str(checkpoint)},
        "data": {"name": "factory", "factory": "counted_digits:digits", "val_size": 300, "options": {"kind": kind}},
        "finetune": {"epochs": 1, "batch_size": 64, "lr": 0.05, "max_steps": 5},
    }
    for key, value in changes.items():
        section, _, field = key.partition(".")
        config[section] = {**config[section], field: value} if field else value
    return build_config(config)


def test_the_same_data_in_memory_or_read_item_by_item_through_workers_gives_the_same_search(counted, tmp_path):
    in_memory = autocomp.search(counted_config(counted[1], "tensors"), tmp_path / "tensors").report
    read = autocomp.search(counted_config(counted[1], "map", **{"data.workers": 2}), tmp_path / "read").report
    assert (read.history, read.pareto_front) == (in_memory.history, in_memory.pareto_front)
    for key in ("val_accuracy", "finetuned_val_accuracy", "test_accuracy", "macs", "channels"):
        assert getattr(read.best, key) == getattr(in_memory.best, key)
    assert read.baseline.test_accuracy == in_memory.baseline.test_accuracy


def test_a_search_reads_only_the_batches_it_uses_and_the_bound_decides_what_is_read_again(counted, tmp_path):
    from autocomp.imports import import_object

    reads: Counter = import_object("counted_digits:READS", "test")
    config = counted_config(counted[1], **{"search.trials": 2})
    data = config.data.load()
    held_out = {int(i) for i in data.val.indices}
    reads.clear()
    autocomp.search(config, tmp_path / "kept")
    train_reads = sum(count for (name, index), count in reads.items() if name == "train" and index not in held_out)
    ev, ft = config.evaluator, config.finetune
    fixed = ev.steps * ev.proxy.batch_size + ev.bn_batches * ev.batch_size  # read once, kept for every candidate
    probe = 2 * int(0 not in held_out)  # the first example, read to check the data set and to learn its image shape
    finish = ft.max_steps * ft.batch_size + 2 * ev.bn_batches * ev.batch_size  # the finalist built, then the winner
    assert train_reads == fixed + finish + probe  # the kept batches were dropped before the finish: read again
    assert len({index for name, index in reads if name == "train"}) < len(data.train) + len(data.val)

    reads.clear()
    unbounded_trials = 2
    autocomp.search(
        counted_config(counted[1], **{"search.trials": unbounded_trials, "evaluator.cache_mb": 0}),
        tmp_path / "nothing-kept",
    )
    again = sum(count for (name, index), count in reads.items() if name == "train" and index not in held_out)
    # nothing kept: every candidate (and the finish's rebuild of the chosen one) reads its batches again
    assert again > fixed * unbounded_trials


def test_a_factory_may_return_data_loaders_or_an_iterable_data_set(counted, tmp_path):
    loader = counted_config(counted[1], "loader").data.load()
    assert type(loader.train.dataset).__name__ == "Counted" and len(loader.train) + len(loader.val) == 1438
    stream = counted_config(counted[1], "stream", **{"search.trials": 2})
    data = stream.data.load()
    assert (len(data.train), len(data.val)) == (1138, 300)
    val_images = as_tensors(data.val)[0]
    first = torch.stack([item[0] for item, _ in zip(iter(data.train.data), range(300))])
    assert torch.equal(val_images, first)  # a stream holds out its first examples
    report = autocomp.search(stream, tmp_path / "stream").report
    assert report.trials == 2 and 0 < report.best.test_accuracy <= 1


def write_images(root, sizes=((30, 20), (24, 24), (40, 28)), per_class=5, suffix=".png"):
    """Coloured images of several sizes in three classes (train and test), as a user's folder might hold."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c, name in enumerate(("ant", "bee", "cat")):
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                width, height = sizes[(c + i) % len(sizes)]
                pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}{suffix}")
    return root


@pytest.mark.parametrize("crop", [1.0, 0.875])
def test_the_lazy_image_folder_yields_the_tensors_of_the_in_memory_one(tmp_path, crop):
    root = write_images(tmp_path)
    kept = load_image_folder(root, image_size=16, crop=crop, in_memory=True)
    lazy = load_image_folder(root, image_size=16, crop=crop, in_memory=False)
    assert isinstance(kept.train, TensorDataset) and isinstance(lazy.train, ImageFolderData)
    for part in ("train", "test"):
        assert torch.equal(as_tensors(getattr(kept, part))[0], as_tensors(getattr(lazy, part))[0])
        assert torch.equal(as_tensors(getattr(kept, part))[1], as_tensors(getattr(lazy, part))[1])
    lazy_bundle = load_dataset("image_folder", data_dir=root, val_size=4, image_size=16, crop=crop, in_memory=False)
    kept_bundle = load_dataset("image_folder", data_dir=root, val_size=4, image_size=16, crop=crop, in_memory=True)
    assert isinstance(lazy_bundle.val, Subset) and lazy_bundle.val.indices == kept_bundle.val.indices  # by index
    for part in ("train", "val"):
        assert torch.equal(as_tensors(getattr(kept_bundle, part))[0], as_tensors(getattr(lazy_bundle, part))[0])
    # by hand: Pillow's resize (and centre crop), scaled to [0, 1], standardised by every training pixel
    files = sorted((root / "train").rglob("*.png"))
    pixels = [_by_hand(path, crop) for path in files]
    every = torch.stack(pixels).double()
    expected = (pixels[0] - every.mean()) / every.std()
    torch.testing.assert_close(lazy.train[0][0], expected.float(), atol=1e-5, rtol=1e-5)


def _by_hand(path, crop: float) -> torch.Tensor:
    """The 16 x 16 evaluation view of one image in [0, 1], computed with Pillow and numpy alone."""
    image = Image.open(path).convert("RGB")
    if crop == 1.0:
        view = image.resize((16, 16), Image.Resampling.BILINEAR)
    else:
        scale = 16 / crop / min(image.size)
        scaled = image.resize((round(image.size[0] * scale), round(image.size[1] * scale)), Image.Resampling.BILINEAR)
        left, top = (scaled.size[0] - 16) // 2, (scaled.size[1] - 16) // 2
        view = scaled.crop((left, top, left + 16, top + 16))
    return torch.from_numpy(np.asarray(view, dtype=np.float32) / 255).permute(2, 0, 1)


def test_augmentation_is_drawn_from_seed_epoch_and_example_and_keeps_the_size(tmp_path):
    root = write_images(tmp_path, suffix=".jpg")
    data = load_dataset("image_folder", data_dir=root, val_size=3, image_size=12, augment=True, crop=0.875)
    assert isinstance(data.train, Subset) and data.train.dataset.augment and not data.val.dataset.augment
    assert not data.test.augment  # the test set is evaluated, never augmented
    reader = BatchReader(data.train, 4)
    first = [images for images, _ in reader.batches(shuffle=True, seed=1, epoch=0)]
    again = [images for images, _ in reader.batches(shuffle=True, seed=1, epoch=0)]
    later = [images for images, _ in reader.batches(shuffle=True, seed=1, epoch=1)]
    assert all(torch.equal(a, b) for a, b in zip(first, again)) and first[0].shape == (4, 3, 12, 12)
    assert not torch.equal(torch.cat(first).sum(0), torch.cat(later).sum(0))
    plain = data.val.dataset[0][0]
    crops = {tuple(data.train.dataset[(0, seed)][0].flatten()[:8].tolist()) for seed in range(6)}
    assert len(crops) > 1 and plain.shape == (3, 12, 12)
    with pytest.raises(ConfigError, match=r"^data options augment and in_memory exclude each other"):
        load_image_folder(root, image_size=12, augment=True, in_memory=True)
    with pytest.raises(ConfigError, match=r"^data option crop=1.5 is not allowed; give the centre fraction kept"):
        load_image_folder(root, image_size=12, crop=1.5)


def test_readers_of_one_data_set_share_its_workers_and_passes_may_interleave(tmp_path):
    import multiprocessing

    data = load_dataset("image_folder", data_dir=write_images(tmp_path), val_size=5, image_size=12, in_memory=False)
    assert data.train.dataset is data.val.dataset  # no augmentation: both splits index one data set
    expected = {part: list(torch.split(as_tensors(getattr(data, part))[0], 3)) for part in ("train", "val")}
    before = len(multiprocessing.active_children())
    train, val = BatchReader(data.train, 3, workers=1), BatchReader(data.val, 3, workers=1)
    for reader, part in ((train, "train"), (val, "val"), (train, "train")):  # one pass after another: one worker
        assert all(torch.equal(a, b) for (a, _), b in zip(reader.batches(), expected[part], strict=True))
    assert len(multiprocessing.active_children()) == before + 1
    outer = train.batches()
    first = next(outer)[0]
    inner = [images for images, _ in val.batches()]  # a pass inside another: a second loader, the outer goes on
    rest = [images for images, _ in outer]
    assert all(torch.equal(a, b) for a, b in zip([first, *rest], expected["train"], strict=True))
    assert all(torch.equal(a, b) for a, b in zip(inner, expected["val"], strict=True))
    assert len(multiprocessing.active_children()) == before + 2
    del train, val, reader, outer  # the last reader gone, the pool's workers stop
    assert len(multiprocessing.active_children()) == before


def test_bf16_autocast_runs_on_the_cpu_in_training_and_scoring():
    data = load_dataset("digits", val_size=300)
    bf16 = Runtime(precision="bf16")
    seen = []
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    model.conv1.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    torch.manual_seed(0)
    train(model, data.train, TrainSettings(epochs=2, batch_size=64, lr=0.1), runtime=bf16)
    assert torch.bfloat16 in seen and all(p.dtype == torch.float32 for p in model.parameters())  # autocast, not a cast
    assert accuracy(model, data.val, runtime=bf16) == pytest.approx(accuracy(model, data.val), abs=0.03)
    assert accuracy(model, data.val, runtime=bf16) > 0.5
    settings = EvaluatorSettings(
        fidelity=Fidelity("proxy", steps=5),
        proxy=ProxyTraining(batch_size=64),
        bn_batches=2,
        batch_size=128,
        val_examples=300,
    )
    evaluator = Evaluator(model, data.example_input(), data.train, data.val, settings, bf16)
    layers = autocomp.prunable_layers(model, data.example_input())
    result = evaluator.score(autocomp.Policy.uniform(layers, keep=0.5))
    assert not result.failed and result.accuracy > 0.3
    fp16 = Evaluator(model, data.example_input(), data.train, data.val, settings, Runtime(precision="fp16"))
    assert fp16.score_key(autocomp.Policy.uniform(layers, keep=0.5)) != evaluator.score_key(
        autocomp.Policy.uniform(layers, keep=0.5)
    )  # a score at another precision is another score
    assert not fp16.score(autocomp.Policy.uniform(layers, keep=0.5)).failed  # with its gradient scaler


@pytest.mark.skipif(not NO_CUDA, reason="this machine has CUDA")
def test_a_gpu_on_a_machine_without_cuda_exits_2_with_one_line_and_writes_nothing(tmp_path):
    from typer.testing import CliRunner

    from autocomp.app.cli import app

    config = tmp_path / "c.yaml"
    config.write_text("data: {name: synthetic}\n")
    result = CliRunner().invoke(
        app, ["search", "--config", str(config), "--out", str(tmp_path / "run"), "--device", "cuda:0"]
    )
    assert result.exit_code == 2 and not (tmp_path / "run").exists()
    assert result.output.strip().splitlines() == [
        "error: device 'cuda:0' is not available on this machine (torch.cuda.is_available() is False); allowed here: "
        "cpu or auto."
    ]
    worker = CliRunner().invoke(
        app, ["worker", "--config", str(config), "--storage", str(tmp_path / "j.log"), "--device", "cuda"]
    )
    assert worker.exit_code == 2 and "device 'cuda' is not available" in worker.output
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"device": "gpu"}, r"config key 'device' = 'gpu' is not allowed: use auto, cpu, cuda or cuda:N"),
        ({"precision": "fp8"}, r"config key 'precision' = 'fp8' is not allowed"),
        ({"runner": {"kind": "ray"}, "device": "cuda:1"}, r"names one GPU, but Ray assigns each trial its GPU share"),
        ({"runner": {"kind": "ray"}, "device": "cuda"}, r"device cuda on Ray needs runner.gpus_per_trial > 0"),
        ({"data": {"workers": -1}}, r"config key 'data.workers' = -1 is not allowed"),
        ({"evaluator": {"cache_mb": -5}}, r"config key 'evaluator.cache_mb' = -5 is not allowed"),
    ],
)
def test_device_precision_and_loader_settings_are_checked_in_one_sentence(settings, message):
    with pytest.raises(ConfigError, match=message):
        build_config(settings)


def test_a_run_folder_resumes_on_another_device_but_not_at_another_precision(tmp_path):
    from autocomp.app.run_folder import check_run_folder, claim_run_folder

    claim_run_folder(tmp_path / "run", build_config({"device": "cpu"}))
    check_run_folder(tmp_path / "run", build_config({"device": "auto", "data": {"workers": 3}}))
    with pytest.raises(ConfigError, match=r"first difference: precision"):
        check_run_folder(tmp_path / "run", build_config({"precision": "bf16"}))


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA GPU")
def test_on_a_gpu_the_teacher_the_candidates_and_the_batches_live_there(tmp_path):
    config = build_config({**TINY, "device": "cuda", "precision": "bf16"})
    report = autocomp.search(config, tmp_path / "gpu").report
    assert report.runtime.device.startswith("cuda") and report.runtime.precision == "bf16"
    assert report.best.test_accuracy > 0.5
    data = load_dataset("digits", val_size=300)
    model = autocomp.zoo.create("resnet20", num_classes=10, in_channels=1)
    cuda = Runtime.create("cuda")
    evaluator = Evaluator(
        model,
        data.example_input(),
        data.train,
        data.val,
        EvaluatorSettings(
            fidelity=Fidelity("proxy", steps=3), proxy=ProxyTraining(batch_size=64), bn_batches=2, batch_size=128
        ),
        cuda,
    )
    assert next(evaluator.teacher.parameters()).is_cuda and not next(evaluator.baseline.parameters()).is_cuda
    assert next(
        evaluator.build(
            autocomp.Policy.uniform(autocomp.prunable_layers(model, data.example_input()), keep=0.5)
        ).parameters()
    ).is_cuda
    reader = BatchReader(TensorDataset(torch.zeros(8, 1, 2, 2), torch.zeros(8, dtype=torch.long)), 4, 0, True)
    assert cuda.to_device(next(reader.batches())[0]).is_cuda


@pytest.mark.gpu
@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA GPU")
def test_ray_trials_compute_on_the_gpu_share_ray_assigns_them(tmp_path):
    import ray

    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    try:
        config = build_config(
            {
                **TINY,
                "device": "auto",
                "search": {"agent": "random", "trials": 4, "reference": False},
                "runner": {"kind": "ray", "gpus_per_trial": 0.5, "cpus_per_trial": 1},
            }
        )
        autocomp.search(config, tmp_path / "ray")
    finally:
        ray.shutdown()
    import optuna

    trials = optuna.load_study(study_name="autocomp", storage=f"sqlite:///{tmp_path / 'ray' / 'study.db'}").trials
    ray_trials = [t for t in trials if "ray_trial" in t.user_attrs]
    assert ray_trials and all(t.user_attrs["ray_device"].startswith("cuda") for t in ray_trials)
    assert all(len(json.loads(t.user_attrs["ray_gpus"])) == 1 for t in ray_trials)
    assert max(t.user_attrs["ray_beside"] for t in ray_trials) >= 1  # two candidates shared the GPU at once
