"""madmom's chord CNN (``CHORDS_CNN_FEAT``) run in torch: the same network, ~10x faster.

madmom runs its ``NeuralNetwork`` in numpy: each convolutional layer convolves every input
channel with every kernel through ``scipy.ndimage.convolve`` (single-threaded, 32 x 32 2-d
convolutions per layer), which makes the network most of ``madmom:cnn``'s labelling time.
:class:`TorchChordCNN` builds the equivalent ``torch.nn`` layers from the very weights of
madmom's loaded network (nothing written to disk, nothing downloaded) and stands in for it
inside madmom's ``CNNChordFeatureProcessor``; the spectrogram before it and the padding,
superframes and global average pooling after it stay madmom's own.

The semantics carried over, layer by layer (``madmom/ml/nn/layers.py``):

- ``ConvolutionalLayer`` (``pad='valid'``): a true convolution (``scipy.ndimage.convolve``
  flips the kernel; torch's ``conv2d`` is a correlation, so the kernels are flipped in time
  and frequency), summed over input channels, plus a scalar bias, then its activation. Weights
  are ``[C_in, C_out, kt, kf]`` (torch wants ``[C_out, C_in, kt, kf]``); data is ``[T, F, C]``
  (torch: ``[1, C, T, F]``). For the even-sized kernel (9 x 12) madmom shifts scipy's margins
  so the output is exactly the 'valid' part, which is what torch computes.
- ``BatchNormLayer``: ``(x - mean) * gamma * inv_std + beta``, then ReLU.
- ``MaxPoolLayer`` (size = stride = (1, 2)): scipy's ``maximum_filter`` sampled at the window
  ends, i.e. non-overlapping pairs along frequency, a trailing odd bin dropped: torch's
  ``max_pool2d`` with floor mode.

Any other layer (or a pooling/stride/padding variant) raises ChordkdError, so a changed model
file cannot silently run a different network.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from chordkd.errors import ChordkdError

_ACTIVATIONS = {"linear": None, "relu": nn.ReLU}


def _activation(layer) -> nn.Module | None:
    fn = getattr(layer, "activation_fn", None)
    name = None if fn is None else getattr(fn, "__name__", repr(fn))
    if name not in (None, *_ACTIVATIONS):
        raise ChordkdError(f"madmom layer {type(layer).__name__}: activation {name} not ported")
    make = _ACTIVATIONS.get(name)
    return make() if make is not None else None


def _conv(layer) -> nn.Conv2d:
    if layer.pad != "valid" or layer.stride not in (None, 1, (1, 1)):
        raise ChordkdError(f"madmom ConvolutionalLayer pad={layer.pad!r} stride={layer.stride!r} "
                           "not ported (only 'valid', stride 1)")
    weights = np.asarray(layer.weights, dtype=np.float32)  # [C_in, C_out, kt, kf]
    c_in, c_out, kt, kf = weights.shape
    conv = nn.Conv2d(c_in, c_out, (kt, kf), bias=True)
    kernel = torch.from_numpy(np.ascontiguousarray(weights.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]))
    bias = torch.as_tensor(np.asarray(layer.bias, dtype=np.float32)).reshape(-1).expand(c_out)
    conv.weight.data.copy_(kernel)
    conv.bias.data.copy_(bias)
    return conv


class _BatchNorm(nn.Module):
    """madmom's ``BatchNormLayer``: ``(x - mean) * (gamma * inv_std) + beta`` per channel."""

    def __init__(self, layer) -> None:
        super().__init__()
        as_channel = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32)).reshape(1, -1, 1, 1)  # noqa: E731
        self.register_buffer("mean", as_channel(layer.mean))
        self.register_buffer("scale", as_channel(np.asarray(layer.gamma) * np.asarray(layer.inv_std)))
        self.register_buffer("beta", as_channel(layer.beta))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) * self.scale + self.beta


def _max_pool(layer) -> nn.MaxPool2d:
    size, stride = tuple(layer.size), tuple(layer.stride)
    if getattr(layer, "axis", None) is not None or size != stride or size[0] != 1:
        raise ChordkdError(f"madmom MaxPoolLayer size={size} stride={stride} not ported "
                           "(only non-overlapping pooling along frequency)")
    return nn.MaxPool2d(size, stride)


def _port(layer) -> list[nn.Module]:
    from madmom.ml.nn.layers import BatchNormLayer, ConvolutionalLayer, MaxPoolLayer

    if isinstance(layer, ConvolutionalLayer):
        modules = [_conv(layer)]
    elif isinstance(layer, BatchNormLayer):
        modules = [_BatchNorm(layer)]
    elif isinstance(layer, MaxPoolLayer):
        return [_max_pool(layer)]
    else:
        raise ChordkdError(f"madmom layer {type(layer).__name__} not ported to torch")
    act = _activation(layer)
    return modules + ([act] if act is not None else [])


class TorchChordCNN(nn.Module):
    """A madmom convolutional ``NeuralNetwork`` as torch layers; called like madmom's network:
    ``[T, F]`` float (madmom's padded spectrogram) -> ``[T', F', C]`` float32 numpy."""

    def __init__(self, network) -> None:
        super().__init__()
        self.layers = nn.Sequential(*[m for layer in network.layers for m in _port(layer)])
        self.eval()

    @torch.inference_mode()
    def forward(self, data: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.asarray(data, dtype=np.float32))[None, None]  # [1, 1, T, F]
        return np.ascontiguousarray(self.layers(x)[0].permute(1, 2, 0).numpy())


def use_torch_network(processor) -> TorchChordCNN:
    """Replace the ``NeuralNetwork`` inside a madmom ``SequentialProcessor`` (e.g.
    ``CNNChordFeatureProcessor``) by its torch port, in place; returns the port."""
    from madmom.ml.nn import NeuralNetwork

    found = [i for i, p in enumerate(processor.processors) if isinstance(p, NeuralNetwork)]
    if len(found) != 1:
        raise ChordkdError(f"expected one madmom NeuralNetwork in {type(processor).__name__}, "
                           f"found {len(found)}")
    port = TorchChordCNN(processor.processors[found[0]])
    processor.processors[found[0]] = port
    return port
