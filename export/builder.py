"""A small helper over ``onnx.helper`` for writing graphs by hand: unique names, typed constants."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


class GraphBuilder:
    """Collects nodes and initializers; every ``op`` call returns its output name(s)."""

    def __init__(self, prefix: str = ""):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._names: dict[str, int] = {}
        self._consts: dict[tuple, str] = {}
        self.prefix = prefix

    def _unique(self, base: str) -> str:
        base = self.prefix + base
        n = self._names.get(base, 0)
        self._names[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def op(self, op_type: str, inputs: list[str], name: str | None = None, outputs: int = 1, **attrs):
        node_name = self._unique(name or op_type)
        outs = [node_name if outputs == 1 else f"{node_name}:{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=node_name, **attrs))
        return outs[0] if outputs == 1 else outs

    def weight(self, array: np.ndarray, name: str, dtype=np.float32) -> str:
        """A named initializer (a learned or fixed tensor)."""
        full = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.array(array, dtype=dtype, order="C"), full))  # np.array keeps 0-d as 0-d
        return full

    def const(self, value, dtype=np.int64) -> str:
        """A small constant, shared between uses: scalars stay 0-d, lists become 1-d."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            self._consts[key] = self.weight(arr, "c", dtype)
        return self._consts[key]


def value_info(name: str, elem_type: int, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem_type, shape)


FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64


def fold_constants(graph: onnx.GraphProto) -> int:
    """Replace every node whose inputs are all initializers by its output, as an initializer.

    Evaluated with ONNX's reference implementation, so folding never changes semantics.
    Returns the number of nodes folded.
    """
    from onnx.reference import ReferenceEvaluator

    inits = {t.name: t for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    kept, folded = [], 0
    for node in graph.node:
        if node.input and all(i in inits for i in node.input) and not set(node.output) & graph_outputs:
            sub = helper.make_graph([node], "fold", [], [helper.make_empty_tensor_value_info(o) for o in node.output],
                                    [inits[i] for i in node.input])
            model = helper.make_model(sub, opset_imports=[helper.make_opsetid("", 17)])
            values = ReferenceEvaluator(model).run(None, {})
            for name, value in zip(node.output, values):
                inits[name] = numpy_helper.from_array(np.asarray(value), name)
            folded += 1
        else:
            kept.append(node)
    used = {i for n in kept for i in n.input} | graph_outputs
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(t for name, t in inits.items() if name in used)
    return folded
