"""Convolutions read as matrices: what lets a layer method treat nn.Conv1d/2d/3d like nn.Linear.

A convolution's kernel is a tensor (out, in, k1, k2...). At every output position it multiplies
the patch of input under the kernel, flattened to in*k1*k2 numbers, by the matrix

    W = kernel.flatten(1)                      (out, in*k1*k2)

(the "im2col" view of a convolution). So a change of that matrix, ΔW, is a change of the kernel,
ΔW.view(out, in, k1, k2), and "W + ΔW" merges exactly as it does for a linear layer; the
base-weight seam of tuners/layer.py hands every method this matrix. For the forward pass the
matrix is folded back into a kernel and convolved with the layer's own stride, padding and dilation.

Two kinds of convolution are refused, both with a way out in the error:
- grouped convolutions (groups > 1, e.g. depthwise): their kernel is not one matrix over all input
  channels, and peft 0.21 cannot merge LoRA into them either;
- padding modes other than zeros: peft's LoRA pads the adapter's input with zeros whatever the
  base layer does, so its outputs would differ from the merged layer's.
"""
import torch
import torch.nn.functional as F
from torch import nn

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_FUNCTIONS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def is_conv(module: nn.Module) -> bool:
    return isinstance(module, CONV_TYPES)


def check_conv(layer: nn.Module, method: str, module_name: str) -> None:
    """Refuse the convolutions a method cannot read as one matrix (see the module docstring)."""
    if layer.groups != 1:
        raise ValueError(f"{module_name} is a grouped convolution (groups={layer.groups}); {method} on grouped "
                         "(e.g. depthwise) convolutions is not implemented in peftlab. Leave it out of "
                         "target_modules (or add it to exclude_modules) and target the pointwise convolutions.")
    if layer.padding_mode != "zeros":
        raise ValueError(f"{module_name} pads with padding_mode={layer.padding_mode!r}; {method} on convolutions "
                         "is implemented for zero padding only (peft's adapter pads with zeros, so its output would "
                         "not match the merged layer's). Leave this layer out of target_modules.")


def convolve(layer: nn.Module, x: torch.Tensor, matrix: torch.Tensor, bias: torch.Tensor | None = None):
    """y = conv(x, M) with the (out, in*k1*k2...) matrix M folded into `layer`'s kernel shape,
    and `layer`'s stride, padding and dilation."""
    kernel = matrix.reshape(layer.weight.shape)                             # (out, in, k1, k2...)
    conv = CONV_FUNCTIONS[kernel.dim() - 2]
    return conv(x, kernel, bias, layer.stride, layer.padding, layer.dilation, layer.groups)


def per_channel(layer: nn.Module, vector: torch.Tensor) -> torch.Tensor:
    """An (out,) vector shaped to scale `layer`'s output (N, out, *spatial) channel by channel."""
    return vector.view(-1, *([1] * (layer.weight.dim() - 2)))
