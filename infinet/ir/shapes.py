"""Shape inference: what each layer's output looks like, and whether it fits its input."""
from __future__ import annotations

from ..errors import NetError
from .layers import (Activation, AvgPool, Conv, Dense, Flatten, GlobalAvgPool, Input, Layer,
                     Shape, conv_geometry)


def infer_shapes(layers: list[Layer]) -> list[Shape]:
    """The shape after each layer (``shapes[i]`` is the output of ``layers[i]``).

    Raises :class:`NetError` at the offending layer for every shape that does not fit.
    """
    assert isinstance(layers[0], Input)
    shapes = [layers[0].shape]
    # After flatten the features are no longer identically distributed (NT marks them
    # non-Gaussian): a nonlinearity there needs a dense layer first.
    gaussian = True
    for layer in layers[1:]:
        shape = shapes[-1]
        if isinstance(layer, Dense):
            if not shape.is_flat:
                raise NetError(f"dense needs a flat input, but its input is {_image(shape)}; "
                               "add `flatten` or `gap` before it", layer.pos)
            out, gaussian = Shape(()), True
        elif isinstance(layer, Conv):
            _need_image(layer, shape, "conv")
            out = Shape(tuple(_window_out(layer, n, q, layer.stride, layer.pad, "filter")
                              for n, q in zip(shape.spatial, layer.size)))
            gaussian = True
        elif isinstance(layer, AvgPool):
            _need_image(layer, shape, "avgpool")
            out = Shape(tuple(_window_out(layer, n, q, s, layer.pad, "pooling window")
                              for n, q, s in zip(shape.spatial, layer.window, layer.stride)),
                        shape.channels)
        elif isinstance(layer, Activation):
            if layer.nonlinear and not gaussian:
                raise NetError(f"{layer.name} right after flatten: the flattened features are not "
                               "identically distributed; put a dense layer in between", layer.pos)
            out = shape
        elif isinstance(layer, GlobalAvgPool):
            _need_image(layer, shape, "gap")
            out = Shape((), shape.channels)
        elif isinstance(layer, Flatten):
            if shape.is_flat:
                raise NetError("flatten on an input that is already flat", layer.pos)
            out = Shape((), None if shape.channels is None else shape.channels * shape.positions)
            gaussian = False
        else:  # pragma: no cover - every IR layer is handled above
            raise AssertionError(type(layer))
        shapes.append(out)
    if not shapes[-1].is_flat:
        last = layers[-1]
        raise NetError(f"the network ends with {_image(shapes[-1])}, not a flat output; end it with "
                       "`flatten` or `gap` (and usually a dense readout)", last.pos)
    return shapes


def _image(shape: Shape) -> str:
    return "an image (" + "x".join(map(str, shape.spatial)) + ")"


def _need_image(layer: Layer, shape: Shape, name: str) -> None:
    if shape.is_flat:
        raise NetError(f"{name} needs an image input, but its input is a flat vector", layer.pos)


def _window_out(layer: Layer, n: int, q: int, stride: int, pad: str, what: str) -> int:
    if pad == "valid" and q > n:
        raise NetError(f"the {q}-wide {what} is larger than its {n}-wide input (pad=valid)",
                       layer.pos)
    return conv_geometry(n, q, stride, pad)[0]
