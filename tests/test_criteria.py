"""Channel-importance criteria rank channels as their papers say, and reconstruction refits pruned layers."""

import copy

import pytest
import torch
from torch import nn

import autocomp
from autocomp.compress import Compressor, criterion_names, get_criterion
from autocomp.compress.reconstruct import reconstruct
from autocomp.graph import ModelGraph

X = torch.randn(8, 2, 6, 6, generator=torch.Generator().manual_seed(0))


class Tiny(nn.Module):
    """conv1 (``width`` channels, the group under test) -> BN -> ReLU -> 1x1 conv2 -> pool -> fc."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 3, 1, bias=False)
        self.fc = nn.Linear(3, 2)
        nn.init.ones_(self.conv2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def conv1_scores(model: nn.Module, name: str, batches=()) -> torch.Tensor:
    criterion = get_criterion(name)
    criterion.prepare(model, list(batches))
    graph = ModelGraph(model, X[:1])
    assert graph.groups[0].layers == ("conv1",)
    return graph.channel_scores(criterion)[0]


def filters(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows).reshape(len(rows), 2, 3, 3)


def test_l1_and_l2_rank_by_their_own_norm():
    model = Tiny().eval()
    spread = [0.5] * 18  # l1 = 9, l2^2 = 4.5
    peaked = [8.0] + [0.0] * 17  # l1 = 8, l2^2 = 64
    with torch.no_grad():
        model.conv1.weight.copy_(filters(spread, peaked, [1.0] * 18, [2.0] * 18))
    assert conv1_scores(model, "l1").argsort().tolist() == [1, 0, 2, 3]
    assert conv1_scores(model, "l2").argsort().tolist() == [0, 2, 1, 3]


def test_fpgm_removes_the_filter_nearest_the_geometric_median_first():
    model = Tiny().eval()
    centre = torch.linspace(0.5, 1.5, 18)
    with torch.no_grad():
        model.conv1.weight.copy_(torch.stack([centre, centre + 0.1, centre - 0.1, centre + 5.0]).reshape(4, 2, 3, 3))
    scores = conv1_scores(model, "fpgm")
    assert scores.argmin() == 0  # the median itself is the most replaceable
    assert scores.argmax() == 3  # the outlier is unique
    assert conv1_scores(model, "l1").argmin() != 0  # magnitude would rank them otherwise


def test_bn_scale_ranks_by_gamma():
    model = Tiny().eval()
    with torch.no_grad():
        model.bn1.weight.copy_(torch.tensor([0.5, 2.0, 0.1, 1.0]))
    assert conv1_scores(model, "bn_scale").argsort().tolist() == [2, 0, 3, 1]


def test_bn_scale_without_batchnorm_falls_back_to_l1():
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 1), nn.Flatten(), nn.Linear(48, 2))
    with torch.no_grad():
        model[0].weight.copy_(filters([3.0] * 18, [1.0] * 18, [2.0] * 18, [4.0] * 18))
    graph = ModelGraph(model, X[:1])
    assert graph.channel_scores(get_criterion("bn_scale"))[0].argsort().tolist() == [1, 2, 0, 3]


def test_taylor_scores_a_channel_nobody_reads_as_zero():
    torch.manual_seed(0)
    model = Tiny().eval()
    with torch.no_grad():
        model.conv2.weight[:, 2] = 0.0  # channel 2 reaches nothing downstream: its gradient is zero
    scores = conv1_scores(model, "taylor", [(X, torch.tensor([0, 1] * 4))])
    assert scores[2] == 0.0
    assert (scores[[0, 1, 3]] > 0).all()


def test_apoz_ranks_channels_that_are_always_zero_lowest():
    torch.manual_seed(0)
    model = Tiny().eval()
    with torch.no_grad():
        model.bn1.bias.copy_(torch.tensor([-100.0, 0.0, 0.0, 100.0]))  # channel 0 never fires, channel 3 always
    scores = conv1_scores(model, "apoz", [(X, torch.zeros(8, dtype=torch.long))])
    assert scores.argmin() == 0 and scores.argmax() == 3
    assert scores[0] < 1e-3


def test_random_is_repeatable():
    group_scores = [ModelGraph(Tiny(), X[:1]).channel_scores(get_criterion("random")) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*group_scores))


@pytest.mark.parametrize("name", ["taylor", "apoz"])
def test_data_criteria_refuse_to_score_without_data(name):
    with pytest.raises(autocomp.ConfigError, match=f"criterion '{name}' needs data"):
        ModelGraph(Tiny(), X[:1]).channel_scores(get_criterion(name))
    with pytest.raises(autocomp.ConfigError, match="needs data"):
        Compressor(Tiny(), X[:1], name)


def test_unknown_criterion_names_the_value_and_the_choices():
    with pytest.raises(autocomp.ConfigError, match=r"'magic'.*apoz, bn_scale, fpgm, l1, l2, random, taylor"):
        get_criterion("magic")


@pytest.fixture(scope="module")
def resnet_graph() -> ModelGraph:
    torch.manual_seed(0)
    return ModelGraph(autocomp.zoo.create("resnet20", num_classes=10, in_channels=1).eval(), torch.randn(1, 1, 28, 28))


@pytest.mark.parametrize("name", criterion_names())
def test_every_criterion_scores_every_group_of_a_resnet(resnet_graph, name):
    criterion = get_criterion(name)
    criterion.prepare(resnet_graph.model, [(torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,)))])
    scores, again = resnet_graph.channel_scores(criterion), resnet_graph.channel_scores(criterion)
    resnet_graph.model.zero_grad(set_to_none=True)
    assert len(scores) == len(resnet_graph.groups) > 3
    for group, score in zip(resnet_graph.groups, scores):
        assert score.dtype == torch.float32 and score.shape == (group.channels,) and torch.isfinite(score).all()
    if name != "random":  # random draws new scores on every call (repeatable across runs, see above)
        assert all(torch.equal(a, b) for a, b in zip(scores, again))


def trained_like(model: nn.Module) -> nn.Module:
    """Give BatchNorm realistic running statistics."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, *X.shape[1:]))
    return model.eval()


def test_reconstruction_lowers_the_error_against_the_original():
    torch.manual_seed(0)
    model = trained_like(Tiny(width=16))
    nn.init.normal_(model.conv2.weight)
    data = [(torch.randn(32, 2, 6, 6), torch.zeros(32, dtype=torch.long)) for _ in range(2)]
    held_out = torch.randn(64, 2, 6, 6)
    policy = autocomp.Policy({"conv1": autocomp.LayerDecision(0.5)})
    errors = {}
    for refit in (False, True):
        small = Compressor(model, X[:1], "l1", data, reconstruct=refit)(policy)
        errors[refit] = (
            (
                small.conv2(torch.relu(small.bn1(small.conv1(held_out))))
                - model.conv2(torch.relu(model.bn1(model.conv1(held_out))))
            )
            ** 2
        ).mean()
    assert errors[True] < 0.7 * errors[False]


def test_reconstruction_recovers_the_weights_when_the_pruned_channels_were_dead():
    torch.manual_seed(0)
    model = trained_like(Tiny())
    with torch.no_grad():  # channels 1 and 2 output exactly zero after BN and ReLU
        model.bn1.weight[[1, 2]] = 0.0
        model.bn1.bias[[1, 2]] = -1.0
        model.conv2.weight.normal_()
    small = copy.deepcopy(model)
    graph = ModelGraph(small, X[:1])
    kept = graph.prune([2, 3], [torch.tensor([1.0, 0.0, 0.0, 1.0]), torch.ones(3)])
    assert kept["conv1"].tolist() == [0, 3]
    with torch.no_grad():
        small.conv2.weight.normal_()  # forget the right answer
    assert reconstruct(model, small, kept, [torch.randn(32, 2, 6, 6)], layers=["fc"]) == []
    refitted = reconstruct(model, small, kept, [torch.randn(32, 2, 6, 6)])
    assert refitted == ["conv2"]
    assert torch.allclose(small.conv2.weight, model.conv2.weight[:, [0, 3]], atol=1e-4)


def test_reconstruction_with_nothing_pruned_changes_nothing():
    model = trained_like(Tiny())
    small = copy.deepcopy(model)
    kept = ModelGraph(small, X[:1]).prune([4, 3], [torch.ones(4), torch.ones(3)])
    assert reconstruct(model, small, kept, [torch.randn(8, 2, 6, 6)]) == []
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), small.state_dict().values()))


def test_reconstruction_skips_layers_with_too_few_samples():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    small = copy.deepcopy(model)
    kept = ModelGraph(small, torch.randn(1, 20)).prune([16], [torch.arange(32.0)])
    before = small[2].weight.clone()
    assert reconstruct(model, small, kept, [torch.randn(60, 20)]) == []  # 60 rows < 4 x 16 weights per output
    assert torch.equal(small[2].weight, before)
    assert reconstruct(model, small, kept, [torch.randn(64, 20)]) == ["2"]
