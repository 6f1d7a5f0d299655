"""Shape inference: what each state looks like, and whether every layer fits its inputs."""
from __future__ import annotations

from ..errors import NetError
from ..layers.base import StateInfo, describe_spatial


def infer_states(nodes) -> list[StateInfo]:
    """The shape and flags of every state (``states[i]`` is the output of ``nodes[i]``).

    Raises :class:`NetError` at the offending layer for every shape that does not fit.
    """
    states: list[StateInfo] = []
    for node in nodes:
        states.append(node.layer.infer([states[j] for j in node.inputs]))
    out = states[-1].shape
    if not out.is_flat:
        raise NetError(f"the network ends with {describe_spatial(out)}, not a flat output; end "
                       "it with `flatten` or `gap` (and usually a dense readout)",
                       nodes[-1].layer.pos)
    return states
