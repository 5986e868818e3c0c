"""Training and distillation fine-tuning: SGD, one-cycle schedule, checkpointed and resumable."""

from __future__ import annotations

import time
from collections.abc import Sized
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from autocomp.data import num_batches
from autocomp.data.batching import BatchReader
from autocomp.distill import distillation_loss
from autocomp.errors import ConfigError
from autocomp.files import save_state
from autocomp.logs import logger
from autocomp.memory_format import channels_last
from autocomp.progress import progress_bar
from autocomp.runtime import CPU, Runtime, Throughput
from autocomp.settings import Momentum, NonNegativeFloat, Positive, PositiveFloat, Weight, check

log = logger(__name__)

CHECKPOINT_EVERY_STEPS = 100


@dataclass(frozen=True)
class TrainSettings:
    """SGD with momentum and a one-cycle learning-rate schedule."""

    epochs: Positive = 3
    batch_size: Positive = 128
    lr: PositiveFloat = 0.1
    momentum: Momentum = 0.9
    weight_decay: NonNegativeFloat = 5e-4
    seed: int = 0
    max_steps: Positive | None = None
    """Stop after this many steps (the schedule shortened to them) instead of ``epochs`` full passes."""

    def __post_init__(self) -> None:
        check(self, "training")

    def total_steps(self, steps_per_epoch: int) -> int:
        """Steps of the whole training."""
        total = self.epochs * steps_per_epoch
        return total if self.max_steps is None else min(total, self.max_steps)

    def defining(self) -> dict[str, object]:
        """The fields that define the training (an unset ``max_steps`` leaves checkpoints of earlier versions valid)."""
        fields = asdict(self)
        if self.max_steps is None:
            del fields["max_steps"]
        return fields


@dataclass(frozen=True)
class Distillation:
    """Hinton et al. 2015: ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE``."""

    teacher: nn.Module
    temperature: PositiveFloat = 4.0
    alpha: Weight = 0.7

    def __post_init__(self) -> None:
        check(self, "distillation")


def descend(
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    loss: torch.Tensor,
    failure: str,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """One optimizer and schedule step on ``loss`` (scaled by ``scaler`` for fp16); FloatingPointError(``failure`` with
    the loss) when it is not finite."""
    if not torch.isfinite(loss):
        raise FloatingPointError(failure.format(loss.item()))
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        if scaler.get_scale() < scale:  # gradients overflowed at this scale: the step was skipped, the schedule waits
            return
    schedule.step()


def _step_seed(seed: int, step: int) -> int:
    """The random seed of a training step (dropout's masks): a resumed training draws what an uninterrupted one drew."""
    return seed * 1_000_003 + step


def train(
    model: nn.Module,
    data: Dataset,
    settings: TrainSettings,
    checkpoint: Path | None = None,
    distill: Distillation | None = None,
    label: str = "train",
    runtime: Runtime = CPU,
    throughput: Throughput | None = None,
) -> nn.Module:
    """Train ``model`` in place on ``runtime``'s device (it stays there); with ``checkpoint`` an interrupted call
    resumes where it stopped. The distillation teacher must be on that device already. ``throughput`` counts the
    images trained and their seconds.

    Random draws inside the model (dropout) are seeded per step, so equal settings train to equal weights, resumed or
    not, whatever ran before; the caller's random state is left as it was."""
    steps_per_epoch = num_batches(data, settings.batch_size, drop_last=True)
    if steps_per_epoch == 0:
        raise ConfigError(
            f"batch_size {settings.batch_size} is larger than the {len(cast(Sized, data))} training examples."
        )
    total_steps = settings.total_steps(steps_per_epoch)
    model.to(runtime.device)
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        nesterov=settings.momentum > 0,
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=settings.lr, total_steps=total_steps, pct_start=0.15, anneal_strategy="cos"
    )
    scaler = runtime.grad_scaler()
    step = 0
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location=runtime.device, weights_only=True)
        if state["settings"] == settings.defining():
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            if scaler is not None and "scaler" in state:
                scaler.load_state_dict(state["scaler"])
            step = state["step"]
            log.info(f"{label}: resuming at step {step} of {total_steps} from {checkpoint}")

    def save() -> None:
        if checkpoint is not None:
            save_state(
                {
                    "settings": settings.defining(),
                    "step": step,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    **({} if scaler is None else {"scaler": scaler.state_dict()}),
                },
                checkpoint,
            )

    if distill is not None:
        distill.teacher.eval()
    model.train()
    reader = BatchReader(data, settings.batch_size, runtime.workers, runtime.pin_memory)
    counted = throughput if throughput is not None else Throughput()
    epochs = -(-total_steps // steps_per_epoch)
    with progress_bar() as bar, channels_last(model) as layout, runtime.fork_rng():
        task = bar.add_task(f"{label} ({runtime.describe()})", total=total_steps, completed=step, info="")
        while step < total_steps:
            epoch, skip = divmod(step, steps_per_epoch)
            epoch_rate = Throughput()
            started = time.perf_counter()
            batches = reader.batches(
                shuffle=True, seed=settings.seed, epoch=epoch, drop_last=True, start=skip, count=total_steps - step
            )
            for images, labels in batches:
                images, labels = runtime.to_device(images), runtime.to_device(labels)
                runtime.seed(_step_seed(settings.seed, step))
                with runtime.autocast():
                    logits = model(layout(images))
                    if distill is None:
                        loss = F.cross_entropy(logits, labels)
                    else:
                        with torch.no_grad():
                            teacher_logits = distill.teacher(images)
                        loss = distillation_loss(
                            logits.float(), teacher_logits.float(), labels, distill.temperature, distill.alpha
                        )
                descend(optimizer, schedule, loss, f"{label}: loss became {{}} at step {step}.", scaler)
                step += 1
                now = time.perf_counter()
                epoch_rate.add(len(labels), now - started)
                counted.add(len(labels), now - started)
                started = now
                bar.update(
                    task,
                    advance=1,
                    info=f"epoch {epoch + 1}/{epochs} loss {loss.item():.3f} {epoch_rate.per_second:.0f} img/s",
                )
                if step % CHECKPOINT_EVERY_STEPS == 0 or step % steps_per_epoch == 0 or step == total_steps:
                    save()
            if not bar.console.is_terminal:  # logs get one line per epoch instead of a live bar
                log.info(
                    f"{label}: epoch {epoch + 1}/{epochs} done, last loss {loss.item():.3f}, "
                    f"{epoch_rate.per_second:.0f} img/s on {runtime.describe()}"
                )
    model.eval()
    return model
