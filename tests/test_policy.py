import json

import pytest

from autocomp import ConfigError, LayerDecision, Policy


def test_json_round_trip_keeps_every_decision(tmp_path):
    policy = Policy(
        {
            "conv1": LayerDecision(0.5),
            "layer1.0.conv1": LayerDecision(0.25, rank=0.5, rank_scheme="separable"),
            "layer1.0.conv2": LayerDecision(0.5, weight_bits=2, weight_scheme="ternary", act_bits=3),
            "fc0": LayerDecision(1.0, weight_bits=8),
        },
        width=0.75,
        resolution=0.5,
        channel_multiple=8,
    )
    path = tmp_path / "policy.json"
    policy.save(path)
    again = Policy.load(path)
    assert again == policy
    assert again.key() == policy.key()
    data = json.loads(path.read_text())
    assert data["version"] == 3 and data["channel_multiple"] == 8
    assert data["layers"]["conv1"] == {"keep": 0.5}  # layers neither factorized nor quantized stay short
    assert data["layers"]["fc0"] == {"keep": 1.0, "weight_bits": 8, "act_bits": None, "weight_scheme": "uniform"}


def test_version_1_files_still_load(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"format": "autocomp.policy", "version": 1, "layers": {"a": {"keep": 0.5}}}))
    assert Policy.load(path) == Policy({"a": LayerDecision(0.5)})


def test_one_weight_bit_means_binary_weights():
    assert LayerDecision(weight_bits=1) == LayerDecision(weight_bits=1, weight_scheme="binary")


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"weight_bits": 9}, "weight bit-width 9"),
        ({"weight_bits": 0}, "weight bit-width 0"),
        ({"weight_bits": 4.0}, "weight bit-width 4.0"),
        ({"weight_bits": True}, "bit-width True"),
        ({"weight_bits": 4, "weight_scheme": "ternary"}, "ternary weights use 2 bits, not 4"),
        ({"weight_bits": 2, "weight_scheme": "binary"}, "binary weights use 1 bit, not 2"),
        ({"weight_bits": 4, "weight_scheme": "fp4"}, "weight quantizer 'fp4' is not known"),
        ({"weight_bits": 4, "act_bits": 1}, "activation bit-width 1"),
        ({"act_bits": 4}, "act_bits 4 needs weight_bits"),
        ({"weight_scheme": "dorefa"}, "needs weight_bits"),
    ],
)
def test_bad_bit_decisions_are_refused(fields, message):
    with pytest.raises(ConfigError, match=message):
        LayerDecision(**fields)


def test_uniform_bits_keep_the_first_and_last_layer_at_the_edge_bits():
    names = ["stem", "a", "b", "head"]
    policy = Policy.uniform(names, 0.5, weight_bits=2, act_bits=4)
    assert [policy.decision(n).weight_bits for n in names] == [8, 2, 2, 8]
    assert [policy.decision(n).act_bits for n in names] == [8, 4, 4, 8]
    assert [policy.decision(n).keep for n in names] == [0.5] * 4
    same = Policy.uniform(names, weight_bits=1, edge_bits=None)
    assert {same.decision(n).weight_scheme for n in names} == {"binary"}
    assert {same.decision(n).act_bits for n in names} == {None}
    assert Policy.uniform(names, weight_bits=4, edge_bits=6).decision("head").weight_bits == 6


def test_multipliers_take_part_in_equality_and_key():
    assert Policy(width=0.5) != Policy()
    assert Policy(resolution=0.5).key() != Policy().key()
    assert Policy(channel_multiple=8).key() != Policy().key()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"width": 0.0}, "width multiplier"),
        ({"width": 1.5}, "width multiplier"),
        ({"resolution": -1}, "resolution"),
        ({"channel_multiple": 0}, "channel multiple"),
        ({"channel_multiple": 2.5}, "channel multiple"),
    ],
)
def test_bad_multipliers_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        Policy(**options)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"rank": 0.0}, "rank fraction"),
        ({"rank": 1.2}, "rank fraction"),
        ({"rank": 0.5, "rank_scheme": "tucker"}, "rank scheme 'tucker'"),
    ],
)
def test_bad_low_rank_decisions_are_refused(fields, message):
    with pytest.raises(ConfigError, match=message):
        LayerDecision(**fields)


def test_key_ignores_order_and_tells_policies_apart():
    a = Policy({"a": LayerDecision(0.5), "b": LayerDecision(0.75)})
    b = Policy({"b": LayerDecision(0.75), "a": LayerDecision(0.5)})
    c = Policy({"a": LayerDecision(0.5), "b": LayerDecision(0.7)})
    assert a.key() == b.key()
    assert a.key() != c.key()


def test_unlisted_layers_are_kept_whole():
    assert Policy({"a": LayerDecision(0.3)}).keep("other") == 1.0


@pytest.mark.parametrize("keep", [0.0, -0.1, 1.01, float("nan"), "half", True])
def test_keep_outside_the_unit_interval_is_refused(keep):
    with pytest.raises(ConfigError, match="keep ratio"):
        LayerDecision(keep)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"layers": {}}, "not an autocomp policy"),
        ({"format": "autocomp.policy", "version": 99, "layers": {}}, "version 99"),
        ({"format": "autocomp.policy", "version": 1, "layers": {"a": {"keep": 0.5, "bits": 4}}}, "unknown field"),
        ({"format": "autocomp.policy", "version": 1, "layers": {"a": {"keep": 2}}}, "outside"),
        ({"format": "autocomp.policy", "version": 2, "widht": 0.5, "layers": {}}, r"unknown key\(s\) \['widht'\]"),
        ({"format": "autocomp.policy", "version": True, "layers": {}}, "version True"),
    ],
)
def test_bad_policy_files_are_refused_with_a_reason(tmp_path, data, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match=message):
        Policy.load(path)


def test_invalid_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"broken.json"):
        Policy.load(path)


@pytest.mark.parametrize("layers", [None, {"conv1": 0.5}, {3: LayerDecision(0.5)}])
def test_layers_must_map_names_to_decisions(layers):
    with pytest.raises(ConfigError, match="LayerDecision"):
        Policy(layers)
