"""BTC checkpoints in the official release format: ``{'model': state_dict, 'mean', 'std'}``.

``load_official_btc`` reads the release files of jayg996/BTC-ISMIR19
(``btc_model_large_voca.pt``, 170 classes; ``btc_model.pt``, 25 classes) and any BTC of
another size saved the same way, and returns a ``ChordModel``: raw log-CQT frames in, logits
out, normalisation inside. ``save_official_btc`` writes a chordkd BTC back in that format, so
students trained here run in the official code.

Loading is strict: every tensor of the network must be in the file with the right shape,
and the only extra tensors tolerated are the eight weights of the official output layer's
unused bidirectional LSTM (``output_layer.lstm.*``), matched by exact name and shape.
Files are always read with ``weights_only=True``; ``mean`` and ``std`` may be 0-d tensors,
Python floats or NumPy float32/float64 scalars, and only what unpickling those NumPy scalars
needs is allow-listed.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from chordkd.errors import CheckpointError
from chordkd.models.btc import BTC

if TYPE_CHECKING:
    from chordkd.models import ChordModel

_PREFIX = "self_attn_layers."
_LAYER = _PREFIX + "self_attn_layers.{}."
OUTPUT_WEIGHT = "output_layer.output_projection.weight"
# The official default; heads do not change any weight's shape, so a file cannot tell.
OFFICIAL_NUM_HEADS = 4


def official_lstm_shapes(hidden_size: int) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the unused ``output_layer.lstm.*`` weights in release files.

    The official output layer builds ``nn.LSTM(hidden, hidden // 2, bidirectional=True)``
    and never calls it; its eight tensors are the only keys loading ignores.
    """
    half = hidden_size // 2
    shapes: dict[str, tuple[int, ...]] = {}
    for suffix in ("", "_reverse"):
        shapes[f"output_layer.lstm.weight_ih_l0{suffix}"] = (4 * half, hidden_size)
        shapes[f"output_layer.lstm.weight_hh_l0{suffix}"] = (4 * half, half)
        shapes[f"output_layer.lstm.bias_ih_l0{suffix}"] = (4 * half,)
        shapes[f"output_layer.lstm.bias_hh_l0{suffix}"] = (4 * half,)
    return shapes


def official_parameter_count(net: BTC) -> int:
    """Parameters of ``net`` as the official code counts them (with the unused LSTM).

    3,036,842 for the published size at 170 classes.
    """
    own = sum(p.numel() for p in net.parameters())
    lstm = sum(int(np.prod(shape)) for shape in official_lstm_shapes(net.hidden_size).values())
    return own + lstm


def load_official_btc(
    path: str | os.PathLike,
    expected_classes: int | None = None,
    *,
    vocabulary: str | None = None,
    num_heads: int = OFFICIAL_NUM_HEADS,
) -> ChordModel:
    """Load a BTC release checkpoint as an eval-mode ``ChordModel``.

    The result maps raw log-CQT frames ``[B, T, 144]`` (``log(|CQT| + 1e-6)``, not normalised)
    to logits ``[B, T, C]``; ``C`` (170 or 25 for the releases) and the architecture (layers,
    hidden size, key/value depth, filter size) are read from the tensor shapes. The number of
    heads cannot be, so it is ``num_heads`` (4 in every official file).

    ``expected_classes``: raise unless the file has this many classes; ``vocabulary`` names
    the vocabulary in that message.

    Raises ``CheckpointError`` naming the file if it is not a readable torch file (missing,
    truncated, another format), does not have the release layout, lacks or adds tensors,
    has shapes that are not BTC's, or has the wrong number of classes.
    """
    from chordkd.models import ChordModel

    path = Path(path)
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"{path}: expected a dict with 'model', 'mean' and 'std', "
            f"got {type(checkpoint).__name__}"
        )
    missing = [key for key in ("model", "mean", "std") if key not in checkpoint]
    if missing:
        raise CheckpointError(
            f"{path}: not a BTC release checkpoint: no {', '.join(map(repr, missing))} "
            f"(keys: {', '.join(map(repr, checkpoint))})"
        )
    state = checkpoint["model"]
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise CheckpointError(f"{path}: 'model' is not a state_dict of named tensors")
    mean = _scalar(checkpoint["mean"], "mean", path)
    std = _scalar(checkpoint["std"], "std", path)
    if not std > 0:
        raise CheckpointError(f"{path}: 'std' must be positive, got {std}")

    config = _infer_config(state, path, num_heads)
    n_classes = config["n_classes"]
    if expected_classes is not None and n_classes != expected_classes:
        needs = f"the vocabulary {vocabulary!r} needs" if vocabulary else "expected"
        raise CheckpointError(
            f"checkpoint {path} has {n_classes} classes, {needs} {expected_classes}"
        )

    net = BTC(**config)
    _check_keys_and_shapes(state, net, path)
    lstm = official_lstm_shapes(net.hidden_size)
    net.load_state_dict({k: v for k, v in state.items() if k not in lstm}, strict=True)
    return ChordModel(net, mean, std).eval()


def save_official_btc(model: ChordModel, path: str | os.PathLike) -> None:
    """Write a ``ChordModel`` holding a ``BTC`` in the official release format (atomically).

    The official code loads state_dicts strictly, so the unused LSTM's weights are written
    too, as zeros. ``load_official_btc`` reads the file back to the same network.
    """
    from chordkd.atomic import torch_save

    net = model.net
    if not isinstance(net, BTC):
        raise CheckpointError(f"{path}: only BTC has an official format, not {type(net).__name__}")
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    for key, shape in official_lstm_shapes(net.hidden_size).items():
        state[key] = torch.zeros(shape)
    torch_save(
        {
            "model": state,
            "mean": model.mean.detach().cpu().clone(),
            "std": model.std.detach().cpu().clone(),
        },
        path,
    )


def _numpy_scalar_globals() -> list[Any]:
    """Exactly what unpickling a NumPy float32/float64 scalar needs under ``weights_only``.

    The scalar reconstructor lives in ``numpy._core`` since NumPy 2 and in ``numpy.core``
    before; files written by either name it by their own path, so it is allowed under both.
    """
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import scalar
    allowed: list[Any] = [
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
    ]
    dtypes = getattr(np, "dtypes", None)  # dtype classes exist since NumPy 1.25
    if dtypes is not None:
        allowed += [dtypes.Float32DType, dtypes.Float64DType]
    return allowed


def read_checkpoint(path: Path) -> Any:
    """``torch.load(weights_only=True)`` of ``path``, with numpy scalars allowed; CheckpointError
    naming the file for anything unreadable."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "weights only" in _first_line(error).lower():
            raise CheckpointError(
                f"{path}: holds objects other than tensors and numbers; refusing to unpickle "
                "them (BTC release files need only tensors and floats)"
            ) from error
        raise CheckpointError(f"{path}: not a torch checkpoint ({_first_line(error)})") from error
    except Exception as error:  # torch.load reports corrupt data with assorted types, OSError too
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint, or truncated "
            f"({type(error).__name__}: {_first_line(error)})"
        ) from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _scalar(value: Any, key: str, path: Path) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        result = float(value.item())
    elif isinstance(value, (float, int, np.floating, np.integer)) and not isinstance(value, bool):
        result = float(value)
    else:
        raise CheckpointError(f"{path}: {key!r} must be a scalar number, got {value!r}")
    if not np.isfinite(result):
        raise CheckpointError(f"{path}: {key!r} is not finite ({result})")
    return result


def _shape(state: Mapping[str, torch.Tensor], key: str, path: Path, rank: int) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointError(f"{path}: missing key {key!r}: not a BTC state_dict")
    shape = tuple(state[key].shape)
    if len(shape) != rank:
        raise CheckpointError(f"{path}: {key!r} has shape {list(shape)}, BTC's has rank {rank}")
    return shape


def _infer_config(state: Mapping[str, torch.Tensor], path: Path, num_heads: int) -> dict[str, Any]:
    """BTC's constructor arguments from the state_dict's shapes."""
    hidden, features = _shape(state, _PREFIX + "embedding_proj.weight", path, 2)
    n_classes, _ = _shape(state, OUTPUT_WEIGHT, path, 2)
    num_layers = 0
    while _LAYER.format(num_layers) + "linear.weight" in state:
        num_layers += 1
    if num_layers == 0:
        raise CheckpointError(f"{path}: missing key {_LAYER.format(0) + 'linear.weight'!r}")
    block = _LAYER.format(0) + "attn_block."
    key_depth, _ = _shape(state, block + "multi_head_attention.query_linear.weight", path, 2)
    value_depth, _ = _shape(state, block + "multi_head_attention.value_linear.weight", path, 2)
    filter_size, _, _ = _shape(
        state, block + "positionwise_convolution.layers.0.conv.weight", path, 3
    )
    for name, depth in (("key", key_depth), ("value", value_depth)):
        if depth % num_heads:
            raise CheckpointError(
                f"{path}: {name} depth {depth} is not divisible by num_heads={num_heads}"
            )
    return {
        "n_classes": n_classes,
        "feature_size": features,
        "hidden_size": hidden,
        "num_layers": num_layers,
        "num_heads": num_heads,
        "total_key_depth": key_depth,
        "total_value_depth": value_depth,
        "filter_size": filter_size,
    }


def _check_keys_and_shapes(state: Mapping[str, torch.Tensor], net: BTC, path: Path) -> None:
    """Strict key and shape comparison, ignoring only the official LSTM's weights."""
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    ignored = official_lstm_shapes(net.hidden_size)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected and k not in ignored]
    if missing:
        raise CheckpointError(f"{path}: missing keys for BTC: {_listing(missing)}")
    if unexpected:
        raise CheckpointError(f"{path}: unexpected keys for BTC: {_listing(unexpected)}")
    wrong = [
        f"{k} {list(state[k].shape)} (BTC needs {list(shape)})"
        for k, shape in {**expected, **ignored}.items()
        if k in state and tuple(state[k].shape) != shape
    ]
    if wrong:
        raise CheckpointError(f"{path}: shapes that are not BTC's: {_listing(wrong)}")
    not_float = [k for k in expected if not state[k].is_floating_point()]
    if not_float:
        raise CheckpointError(f"{path}: non-float tensors: {_listing(not_float)}")


def _listing(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
