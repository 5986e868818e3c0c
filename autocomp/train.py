"""Training and distillation fine-tuning: SGD, one-cycle schedule, checkpointed and resumable."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from autocomp.data import iterate_batches, num_batches
from autocomp.distill import distillation_loss
from autocomp.errors import ConfigError
from autocomp.memory_format import channels_last
from autocomp.progress import console, progress_bar

CHECKPOINT_EVERY_STEPS = 100


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0


@dataclass(frozen=True)
class Distillation:
    """Hinton et al. 2015: ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE``."""

    teacher: nn.Module
    temperature: float = 4.0
    alpha: float = 0.7


def descend(optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler, loss: torch.Tensor,
            failure: str) -> None:
    """One optimizer and schedule step on ``loss``; FloatingPointError(``failure`` with the loss) when it is not finite."""
    if not torch.isfinite(loss):
        raise FloatingPointError(failure.format(loss.item()))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    schedule.step()


def _save_atomic(state: dict, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _step_seed(seed: int, step: int) -> int:
    """The random seed of a training step (dropout's masks): a resumed training draws what an uninterrupted one drew."""
    return seed * 1_000_003 + step


def train(model: nn.Module, data: TensorDataset, settings: TrainSettings, checkpoint: Path | None = None,
          distill: Distillation | None = None, label: str = "train") -> nn.Module:
    """Train ``model`` in place; with ``checkpoint`` an interrupted call resumes where it stopped.

    Random draws inside the model (dropout) are seeded per step, so equal settings train to equal weights, resumed or
    not, whatever ran before; the caller's random state is left as it was."""
    steps_per_epoch = num_batches(data, settings.batch_size, drop_last=True)
    if steps_per_epoch == 0:
        raise ConfigError(f"batch_size {settings.batch_size} is larger than the {len(data)} training examples.")
    total_steps = settings.epochs * steps_per_epoch
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay, nesterov=settings.momentum > 0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr, total_steps=total_steps,
                                                   pct_start=0.15, anneal_strategy="cos")
    step = 0
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if state["settings"] == asdict(settings):
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            schedule.load_state_dict(state["schedule"])
            step = state["step"]
            console.log(f"{label}: resuming at step {step} of {total_steps} from {checkpoint}")

    def save() -> None:
        if checkpoint is not None:
            _save_atomic({"settings": asdict(settings), "step": step, "model": model.state_dict(),
                          "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}, checkpoint)

    if distill is not None:
        distill.teacher.eval()
    model.train()
    with progress_bar() as bar, channels_last(model) as layout, torch.random.fork_rng(devices=[]):
        task = bar.add_task(label, total=total_steps, completed=step, info="")
        while step < total_steps:
            epoch, skip = divmod(step, steps_per_epoch)
            batches = iterate_batches(data, settings.batch_size, shuffle=True, seed=settings.seed, epoch=epoch, drop_last=True)
            for index, (images, labels) in enumerate(batches):
                if index < skip:
                    continue
                torch.default_generator.manual_seed(_step_seed(settings.seed, step))
                logits = model(layout(images))
                if distill is None:
                    loss = F.cross_entropy(logits, labels)
                else:
                    with torch.no_grad():
                        teacher_logits = distill.teacher(images)
                    loss = distillation_loss(logits, teacher_logits, labels, distill.temperature, distill.alpha)
                descend(optimizer, schedule, loss, f"{label}: loss became {{}} at step {step}.")
                step += 1
                bar.update(task, advance=1, info=f"epoch {epoch + 1}/{settings.epochs} loss {loss.item():.3f}")
                if step % CHECKPOINT_EVERY_STEPS == 0 or step % steps_per_epoch == 0:
                    save()
            if not bar.console.is_terminal:  # logs get one line per epoch instead of a live bar
                console.log(f"{label}: epoch {epoch + 1}/{settings.epochs} done, last loss {loss.item():.3f}")
    model.eval()
    return model
