"""The networks: BTC (official weights and numbers), 2E1D, ChordModel, sizes, release files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FIXTURE_BTC, needs_fixture

from chordkd.errors import CheckpointError, ConfigError
from chordkd.models import (
    BTC,
    STUDENT_NAMES,
    ChordModel,
    build_student,
    count_parameters,
    load_official_btc,
    parameter_counts,
    save_official_btc,
)
from chordkd.models.btc import LayerNorm, timing_signal
from chordkd.models.official import official_lstm_shapes, official_parameter_count

FIXTURE = FIXTURE_BTC


def _release(path: Path, state: dict, mean: object = -5.0, std: object = 2.0) -> Path:
    torch.save({"model": state, "mean": mean, "std": std}, path)
    return path


def _fixture_state() -> dict[str, torch.Tensor]:
    return torch.load(FIXTURE / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]


def _raw(batch: int = 2, frames: int = 108, seed: int = 0) -> torch.Tensor:
    # log(|CQT| + 1e-6)-like values: around -5, spread 2
    return torch.randn(batch, frames, 144, generator=torch.Generator().manual_seed(seed)) * 2 - 5


def _small(name: str, n_classes: int = 25) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_student(name, "small", n_classes).eval()


@pytest.fixture
def tiny_btc_release(tmp_path: Path) -> Path:
    """A 2-layer, hidden-32 BTC saved in the release layout."""
    torch.manual_seed(0)
    net = BTC(n_classes=25, hidden_size=32, num_layers=2, total_key_depth=32,
              total_value_depth=32, filter_size=48)  # fmt: skip
    path = tmp_path / "tiny.pt"
    save_official_btc(ChordModel(net, -4.0, 1.5), path)
    return path


# --- BTC against the official code -------------------------------------------------------


@needs_fixture
def test_official_fixture_logits_match() -> None:
    io = torch.load(FIXTURE / "io.pt", map_location="cpu", weights_only=True)
    model = load_official_btc(FIXTURE / "checkpoint.pt")
    with torch.no_grad():
        logits = model(io["raw_features"])
    assert logits.shape == io["expected_logits"].shape == (2, 108, 170)
    torch.testing.assert_close(logits, io["expected_logits"], atol=1e-4, rtol=0)


@needs_fixture
def test_loaded_release_model_is_in_eval_mode_with_stats_inside() -> None:
    model = load_official_btc(FIXTURE / "checkpoint.pt")
    stats = torch.load(FIXTURE / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert not model.training and model.n_classes == 170
    assert float(model.mean) == pytest.approx(float(stats["mean"]))
    assert float(model.std) == pytest.approx(float(stats["std"]))


@needs_fixture
@pytest.mark.parametrize(
    "mean, std",
    [(-5.0, 2.0), (np.float32(-5.0), np.float32(2.0)), (np.float64(-5.0), np.float64(2.0))],
    ids=["python-float", "numpy-float32", "numpy-float64"],
)
def test_25_class_release_file_loads_and_predicts_25_classes(tmp_path, mean, std) -> None:
    state = _fixture_state()
    torch.manual_seed(1)
    head = torch.nn.Linear(128, 25)
    state["output_layer.output_projection.weight"] = head.weight.detach().clone()
    state["output_layer.output_projection.bias"] = head.bias.detach().clone()
    model = load_official_btc(_release(tmp_path / "btc_model.pt", state, mean, std))
    assert model.n_classes == 25
    assert float(model.mean) == -5.0 and float(model.std) == 2.0
    with torch.no_grad():
        assert model(_raw(1, 20)).shape == (1, 20, 25)


def test_numpy1_pickled_stats_load(tmp_path: Path, tiny_btc_release: Path) -> None:
    """Release files were written under NumPy 1.x, which names ``numpy.core.multiarray``."""
    state = torch.load(tiny_btc_release, weights_only=True)["model"]
    modern = _release(tmp_path / "np2.pt", state, np.float64(-4.0), np.float32(1.5))
    legacy = tmp_path / "np1.pt"
    with zipfile.ZipFile(modern) as src, zipfile.ZipFile(legacy, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("data.pkl"):
                data = data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
            dst.writestr(item, data)
    model = load_official_btc(legacy)
    assert (float(model.mean), float(model.std)) == (-4.0, 1.5)


def test_architecture_is_read_from_the_shapes(tiny_btc_release: Path) -> None:
    model = load_official_btc(tiny_btc_release)
    config = model.net.config
    assert (config["num_layers"], config["hidden_size"], config["filter_size"]) == (2, 32, 48)
    assert model.n_classes == 25


def test_saved_release_file_reproduces_the_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = ChordModel(build_student("btc", "small", 170), -5.0, 2.0).eval()
    save_official_btc(original, tmp_path / "student.pt")
    saved = torch.load(tmp_path / "student.pt", weights_only=True)
    assert set(official_lstm_shapes(64)) <= set(saved["model"])  # official strict load needs them
    loaded = load_official_btc(tmp_path / "student.pt", num_heads=2)
    raw = _raw(2, 30)
    with torch.no_grad():
        torch.testing.assert_close(loaded(raw), original(raw))


# --- release-file errors -----------------------------------------------------------------


def test_truncated_checkpoint_raises_naming_the_file(tmp_path, tiny_btc_release) -> None:
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_btc_release.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_official_btc(truncated)


@pytest.mark.parametrize("content", [b"", b"hello, world\n", b"\x80\x02}q\x00."])
def test_file_that_is_not_a_checkpoint_raises_naming_the_file(tmp_path, content) -> None:
    path = tmp_path / "notes.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="notes.pt"):
        load_official_btc(path)


def test_missing_file_raises_naming_it(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="absent.pt"):
        load_official_btc(tmp_path / "absent.pt")


def test_wrong_vocabulary_raises_naming_the_file(tiny_btc_release: Path) -> None:
    message = r"checkpoint .*tiny\.pt has 25 classes, the vocabulary 'large' needs 170"
    with pytest.raises(CheckpointError, match=message):
        load_official_btc(tiny_btc_release, expected_classes=170, vocabulary="large")
    assert load_official_btc(tiny_btc_release, expected_classes=25).n_classes == 25


def test_file_holding_arbitrary_objects_is_refused(tmp_path, tiny_btc_release) -> None:
    checkpoint = torch.load(tiny_btc_release, weights_only=True)
    checkpoint["optimizer"] = torch.optim.SGD  # a class: never unpickled under weights_only
    torch.save(checkpoint, tmp_path / "pickled.pt")
    with pytest.raises(CheckpointError, match="pickled.pt: holds objects other than tensors"):
        load_official_btc(tmp_path / "pickled.pt")


def test_missing_mean_or_std_raises(tmp_path, tiny_btc_release) -> None:
    checkpoint = torch.load(tiny_btc_release, weights_only=True)
    torch.save({"model": checkpoint["model"], "mean": checkpoint["mean"]}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match=r"x.pt: not a BTC release checkpoint: no 'std'"):
        load_official_btc(tmp_path / "x.pt")


@needs_fixture
def test_fixture_loads_leaving_out_exactly_the_lstm_weights() -> None:
    state = _fixture_state()
    loaded = load_official_btc(FIXTURE / "checkpoint.pt").state_dict()
    used = {key.removeprefix("net.") for key in loaded} - {"mean", "std"}
    left_out = {key: tuple(state[key].shape) for key in set(state) - used}
    assert left_out == official_lstm_shapes(128)
    for key in used:
        assert torch.equal(loaded[f"net.{key}"], state[key])


def test_strict_loading_ignores_only_the_lstm_weights(tmp_path, tiny_btc_release) -> None:
    state = torch.load(tiny_btc_release, weights_only=True)["model"]
    lstm = official_lstm_shapes(32)
    assert len(lstm) == 8 and set(lstm) <= set(state)

    without_lstm = {k: v for k, v in state.items() if k not in lstm}
    assert load_official_btc(_release(tmp_path / "no_lstm.pt", without_lstm)).n_classes == 25

    extra = {**state, "output_layer.lstm.weight_ih_l1": torch.zeros(64, 32)}
    with pytest.raises(CheckpointError, match=r"extra.pt: unexpected keys .*weight_ih_l1"):
        load_official_btc(_release(tmp_path / "extra.pt", extra))

    other = {**state, "output_layer.crf.transitions": torch.zeros(25, 25)}
    with pytest.raises(CheckpointError, match=r"other.pt: unexpected keys .*crf"):
        load_official_btc(_release(tmp_path / "other.pt", other))

    bad_lstm = {**state, "output_layer.lstm.bias_ih_l0": torch.zeros(7)}
    with pytest.raises(CheckpointError, match=r"bad_lstm.pt: shapes that are not BTC's"):
        load_official_btc(_release(tmp_path / "bad_lstm.pt", bad_lstm))

    key = "self_attn_layers.self_attn_layers.1.backward_attn_block.layer_norm_ffn.gamma"
    missing = {k: v for k, v in state.items() if k != key}
    with pytest.raises(CheckpointError, match=rf"missing.pt: missing keys .*{key}"):
        load_official_btc(_release(tmp_path / "missing.pt", missing))


def test_state_dict_with_shapes_that_are_not_btcs_raises(tmp_path, tiny_btc_release) -> None:
    state = torch.load(tiny_btc_release, weights_only=True)["model"]
    key = "self_attn_layers.self_attn_layers.0.attn_block.positionwise_convolution.layers.1.conv.weight"
    state[key] = torch.zeros(32, 48, 5)  # kernel 5: not BTC's width-3 convolution
    with pytest.raises(CheckpointError, match=r"conv.pt: shapes that are not BTC's.*\[32, 48, 5\]"):
        load_official_btc(_release(tmp_path / "conv.pt", state))


def test_state_dict_of_another_network_raises(tmp_path: Path) -> None:
    state = build_student("2e1d", "small", 25).state_dict()
    with pytest.raises(CheckpointError, match=r"2e1d.pt: missing key .*embedding_proj"):
        load_official_btc(_release(tmp_path / "2e1d.pt", state))


# --- BTC building blocks -----------------------------------------------------------------


def test_official_layer_norm_divides_by_unbiased_std_plus_eps() -> None:
    x = torch.tensor([[1.0, 2.0, 4.0]])
    std = np.std([1.0, 2.0, 4.0], ddof=1)
    expected = (np.array([1.0, 2.0, 4.0]) - 7 / 3) / (std + 1e-6)
    torch.testing.assert_close(LayerNorm(3)(x)[0], torch.tensor(expected, dtype=torch.float32))


def test_timing_signal_is_sines_then_cosines() -> None:
    signal = timing_signal(3, 4)  # timescales 1 and 1e4 frames
    t = torch.arange(3.0)
    expected = torch.stack([t.sin(), (t * 1e-4).sin(), t.cos(), (t * 1e-4).cos()], dim=1)
    torch.testing.assert_close(signal, expected)


def test_btc_runs_on_inputs_longer_than_its_precomputed_frames() -> None:
    torch.manual_seed(0)
    short = BTC(n_classes=25, hidden_size=32, num_layers=1, total_key_depth=32,
                total_value_depth=32, filter_size=32, max_frames=16).eval()  # fmt: skip
    long = build_student(**{**short.config, "max_frames": 200}).eval()
    long.load_state_dict(short.state_dict())
    x = torch.randn(2, 150, 144)
    with torch.no_grad():
        torch.testing.assert_close(short(x), long(x))


def test_btc_forward_frame_sees_only_the_past_in_the_forward_block() -> None:
    """Frame 0 of the forward-masked block is independent of every later frame."""
    torch.manual_seed(0)
    block = BTC(hidden_size=32, num_layers=1, total_key_depth=32, total_value_depth=32,
                filter_size=32).self_attn_layers.self_attn_layers[0].attn_block.eval()  # fmt: skip
    x = torch.randn(1, 10, 32)
    changed = x.clone()
    changed[:, 5:] += 1.0
    mask = torch.ones(10, 10, dtype=torch.bool).tril()
    with torch.no_grad():
        a, b = block(x, mask), block(changed, mask)
    # the conv FFN reaches one frame to each side, so frames up to 3 are untouched
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


# --- sizes and the student registry ------------------------------------------------------


def test_btc_base_has_the_published_parameter_count() -> None:
    net = build_student("btc", "base", 170)
    assert official_parameter_count(net) == 3_036_842
    assert count_parameters(net) == 3_036_842 - sum(
        int(np.prod(s)) for s in official_lstm_shapes(128).values()
    )


@needs_fixture
def test_btc_base_matches_the_release_state_dict_size() -> None:
    total = sum(v.numel() for v in _fixture_state().values())
    assert official_parameter_count(build_student("btc")) == total


@pytest.mark.parametrize("name", STUDENT_NAMES)
def test_sizes_are_ordered_small_base_large(name: str) -> None:
    counts = {row["size"]: row["parameters"] for row in parameter_counts() if row["name"] == name}
    assert counts["small"] < counts["base"] < counts["large"]
    assert 0.3e6 <= counts["small"] <= 0.8e6
    assert 3 <= counts["large"] / counts["base"] <= 4


def test_2e1d_base_is_comparable_in_size_to_btc_base() -> None:
    ratio = count_parameters(build_student("2e1d")) / count_parameters(build_student("btc"))
    assert 0.8 <= ratio <= 1.2


def test_build_student_rejects_unknown_name_size_and_option() -> None:
    with pytest.raises(ConfigError, match=r"name: unknown student 'lstm'; allowed: btc, 2e1d"):
        build_student("lstm")
    with pytest.raises(ConfigError, match=r"size: unknown size 'huge'; allowed: small, base"):
        build_student("btc", "huge")
    with pytest.raises(ConfigError, match=r"2e1d.hidden_size: unknown option .*d_model"):
        build_student("2e1d", hidden_size=64)


def test_build_student_validates_option_values() -> None:
    with pytest.raises(ConfigError, match=r"btc.total_key_depth: 130 is not divisible"):
        build_student("btc", total_key_depth=130)
    with pytest.raises(ConfigError, match=r"2e1d.dropout: must be a probability"):
        build_student("2e1d", dropout=1.5)
    with pytest.raises(ConfigError, match=r"2e1d.bins_per_token: 10 does not divide"):
        build_student("2e1d", bins_per_token=10)


@pytest.mark.parametrize("name", STUDENT_NAMES)
def test_build_student_rebuilds_from_config(name: str) -> None:
    net = build_student(name, "small", 25, max_frames=64)
    rebuilt = build_student(**net.config)
    assert rebuilt.config == net.config
    rebuilt.load_state_dict(net.state_dict())  # same architecture, strictly


# --- both students -----------------------------------------------------------------------


@pytest.mark.parametrize("frames", [108, 37, 250])
def test_2e1d_forward_shapes(frames: int) -> None:
    net = _small("2e1d", 25)
    with torch.no_grad():
        hidden, logits = net.forward_features(torch.randn(3, frames, 144))
        assert net(torch.randn(3, frames, 144)).shape == (3, frames, 25)
    assert logits.shape == (3, frames, 25)
    assert hidden.shape == (3, frames, net.hidden_size)


@pytest.mark.parametrize("name", STUDENT_NAMES)
def test_forward_features_gives_the_forward_logits(name: str) -> None:
    net = _small(name)
    x = torch.randn(2, 40, 144)
    with torch.no_grad():
        hidden, logits = net.forward_features(x)
        torch.testing.assert_close(logits, net(x))
    assert hidden.shape == (2, 40, net.hidden_size)


@pytest.mark.parametrize("name", STUDENT_NAMES)
def test_students_are_deterministic_in_eval_mode(name: str) -> None:
    net = _small(name)
    x = torch.randn(2, 108, 144)
    with torch.no_grad():
        assert torch.equal(net(x), net(x))


@pytest.mark.parametrize("name", STUDENT_NAMES)
def test_outputs_do_not_depend_on_other_items_in_the_batch(name: str) -> None:
    net = _small(name)
    x = torch.randn(4, 108, 144)
    other = x.clone()
    other[1:] = torch.randn(3, 108, 144) * 3
    with torch.no_grad():
        alone, together, mixed = net(x[:1]), net(x)[:1], net(other)[:1]
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", STUDENT_NAMES)
def test_dropout_is_active_in_training_mode(name: str) -> None:
    net = _small(name).train()
    x = torch.randn(2, 20, 144)
    assert not torch.equal(net(x), net(x))


@pytest.mark.parametrize("name", STUDENT_NAMES)
def test_gradients_reach_every_parameter(name: str) -> None:
    net = _small(name).train()
    net(torch.randn(2, 20, 144)).logsumexp(-1).mean().backward()
    assert [n for n, p in net.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize("name", STUDENT_NAMES)
def test_students_export_with_a_dynamic_number_of_frames(name: str) -> None:
    model = ChordModel(_small(name), mean=-5.0, std=2.0).eval()
    frames = torch.export.Dim("frames", min=2, max=108)
    exported = torch.export.export(model, (_raw(2, 108),), dynamic_shapes={"raw": {1: frames}})
    raw = _raw(2, 45, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(raw), model(raw))


# --- ChordModel --------------------------------------------------------------------------


def test_chord_model_normalises_raw_features_inside() -> None:
    net = _small("btc")
    model = ChordModel(net, mean=-5.0, std=2.0).eval()
    raw = _raw(2, 30)
    with torch.no_grad():
        torch.testing.assert_close(model(raw), net((raw + 5.0) / 2.0))
        torch.testing.assert_close(model.hidden(raw), net.forward_features((raw + 5.0) / 2.0)[0])
    assert model.n_classes == 25
    assert {"mean", "std"} <= set(model.state_dict())


def test_chord_model_rebuilds_from_its_config() -> None:
    model = ChordModel(_small("2e1d"), mean=-4.5, std=1.75).eval()
    rebuilt = ChordModel.from_config(model.config)
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    raw = _raw(1, 50)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(raw), model(raw))
    assert (rebuilt.config["mean"], rebuilt.config["std"]) == (-4.5, 1.75)


@pytest.mark.parametrize("std", [0.0, -1.0, float("nan"), float("inf")])
def test_chord_model_rejects_a_std_that_is_not_positive_and_finite(std: float) -> None:
    with pytest.raises(ConfigError, match="std: must be a positive finite number"):
        ChordModel(_small("btc"), mean=0.0, std=std)
