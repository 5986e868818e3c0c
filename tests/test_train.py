import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from autocomp.data import as_tensors
from autocomp.distill import distillation_loss
from autocomp.evaluate import recalibrate_batchnorm
from autocomp.train import Distillation, TrainSettings, train


def test_distillation_loss_matches_a_hand_computation():
    student = torch.tensor([[1.0, 2.0, 0.5]])
    teacher = torch.tensor([[0.5, 3.0, 1.0]])
    label = torch.tensor([1])
    t, alpha = 2.0, 0.6

    def softmax(row):
        exps = [math.exp(v / t) for v in row]
        return [e / sum(exps) for e in exps]

    p_t, p_s = softmax(teacher[0].tolist()), softmax(student[0].tolist())
    kl = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s))
    exps = [math.exp(v) for v in student[0].tolist()]
    ce = -math.log(exps[1] / sum(exps))
    expected = alpha * t * t * kl + (1 - alpha) * ce
    assert distillation_loss(student, teacher, label, t, alpha).item() == pytest.approx(expected, rel=1e-6)


def tiny_problem():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 6, 6, generator=generator)
    y = (x.mean(dim=(1, 2, 3)) > 0).long()
    return TensorDataset(x, y)


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(4, 2),
    )


def test_training_draws_its_dropout_masks_from_its_seed_not_from_what_ran_before():
    data, settings = tiny_problem(), TrainSettings(epochs=1, batch_size=16, lr=0.05)
    first = train(tiny_model(), data, settings)
    model = tiny_model()
    torch.manual_seed(123)  # someone else's random state
    state = torch.get_rng_state()
    second = train(model, data, settings)
    assert torch.equal(torch.get_rng_state(), state)  # left as it was
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch):
    data, settings = tiny_problem(), TrainSettings(epochs=3, batch_size=16, lr=0.05)
    reference = train(tiny_model(), data, settings)

    import autocomp.train as module

    monkeypatch.setattr(module, "CHECKPOINT_EVERY_STEPS", 4)
    checkpoint = tmp_path / "ckpt.pt"
    calls = {"n": 0}
    original_step = torch.optim.SGD.step

    def interrupting_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 10:
            raise KeyboardInterrupt
        return original_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", interrupting_step)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_model(), data, settings, checkpoint=checkpoint)
    monkeypatch.setattr(torch.optim.SGD, "step", original_step)
    assert torch.load(checkpoint, weights_only=True)["step"] == 8

    resumed = train(tiny_model(), data, settings, checkpoint=checkpoint)
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)


def test_distillation_pulls_the_student_towards_the_teacher():
    data = tiny_problem()
    teacher = train(tiny_model(), data, TrainSettings(epochs=4, batch_size=16, lr=0.05))
    torch.manual_seed(1)
    student = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2)
    ).eval()
    x = as_tensors(data)[0]
    with torch.no_grad():
        gap_before = (student(x).softmax(1) - teacher(x).softmax(1)).abs().mean()
    train(student, data, TrainSettings(epochs=4, batch_size=16, lr=0.05), distill=Distillation(teacher, 2.0, 1.0))
    with torch.no_grad():
        gap_after = (student(x).softmax(1) - teacher(x).softmax(1)).abs().mean()
    assert gap_after < gap_before


def test_batchnorm_recalibration_gives_the_exact_batch_statistics():
    conv = nn.Conv2d(1, 3, 3, bias=False)
    model = nn.Sequential(conv, nn.BatchNorm2d(3))
    model[1].running_mean.fill_(7.0)
    batches = [torch.randn(8, 1, 6, 6) for _ in range(3)]
    recalibrate_batchnorm(model, batches)
    with torch.no_grad():
        features = torch.cat([conv(b) for b in batches])
    assert torch.allclose(model[1].running_mean, features.mean(dim=(0, 2, 3)), atol=1e-5)
    per_batch_var = torch.stack([conv(b).detach().var(dim=(0, 2, 3), unbiased=True) for b in batches])
    assert torch.allclose(model[1].running_var, per_batch_var.mean(0), atol=1e-5)
    assert not model.training
