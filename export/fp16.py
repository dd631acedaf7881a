"""FP32 graph -> FP16 graph: the KW-MLP blocks in FP16, the MFCC front end and the scene in FP32.

The FP16 region is defined by the graph's structure, not by a list of node names: it is every
node reachable from the front end's output ``log_mel`` through floating-point tensors, except
the scene (nodes named ``scene.*`` and everything computed from them). So the front end (pad,
STFT conv, power, mel, log, top-dB: all ancestors of ``log_mel``) stays FP32, because a
full-scale tone gives powers near FP16's maximum and the 1e-10 log floor is below its smallest
subnormal; all shape and index arithmetic (reached only through int64 tensors) and the
timestamps stay as they are; the scene's positions stay FP32/INT64 (FP16 cannot represent frame
indices above 2048). Inputs and outputs stay float32: explicit ``Cast`` nodes sit on every edge
that crosses the region's border, so a strongly typed TensorRT network built from the graph
computes exactly these precisions.

Why a hand-written pass rather than onnxconverter-common's ``convert_float_to_float16``: the
region above would have to be turned into a node block list anyway, and this pass is small
enough to read in full; it handles initializers shared across the border (converted copies) and
``Cast`` targets inside the region, and adds no dependency to the export extra.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FRONT_END_OUTPUT = "log_mel"
SCENE_PREFIX = "scene."
FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
# LayerNorm precision, measured with true FP16 arithmetic (ONNX's numpy reference evaluator) on
# the 210 keyword windows: lowest frame-embedding cosine to FP32 0.999961 with FP16 LayerNorm,
# 0.999967 with FP32 LayerNorm, 210/210 top-1 agreement either way. So the blocks run FP16
# throughout; ``keep_fp32_ops=("LayerNormalization",)`` would keep it FP32.
DEFAULT_KEEP_FP32_OPS: tuple[str, ...] = ()


def float_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of every float32 tensor of ``model`` (inputs, initializers, inferred values)."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    values = list(g.input) + list(g.value_info) + list(g.output)
    names = {v.name for v in values if v.type.tensor_type.elem_type == FLOAT}
    return names | {t.name for t in g.initializer if t.data_type == FLOAT}


def fp16_region(graph: onnx.GraphProto, floats: set[str], keep_fp32_ops: tuple[str, ...] = ()) -> set[int]:
    """Indices of the nodes that compute in FP16 (see the module docstring for the rule)."""
    producer = {o: i for i, n in enumerate(graph.node) for o in n.output}
    if FRONT_END_OUTPUT not in producer:
        raise ValueError(f"the graph has no tensor named {FRONT_END_OUTPUT!r}: cannot find the front end's end")
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(graph.node):
        for name in n.input:
            consumers.setdefault(name, []).append(i)

    def float_reach(starts: list[str]) -> set[int]:
        seen: set[int] = set()
        todo = [t for t in starts if t in floats]
        while todo:
            for i in consumers.get(todo.pop(), []):
                if i not in seen:
                    seen.add(i)
                    todo.extend(o for o in graph.node[i].output if o in floats)
        return seen

    region = float_reach([FRONT_END_OUTPUT])
    scene = [i for i, n in enumerate(graph.node) if n.name.startswith(SCENE_PREFIX)]
    fp32 = set(scene) | float_reach([o for i in scene for o in graph.node[i].output])
    fp32 |= {i for i, n in enumerate(graph.node) if n.op_type in keep_fp32_ops}
    return region - fp32


def convert_to_fp16(model: onnx.ModelProto, keep_fp32_ops: tuple[str, ...] = DEFAULT_KEEP_FP32_OPS) -> onnx.ModelProto:
    """A copy of ``model`` whose FP16 region (:func:`fp16_region`) computes in FP16.

    Graph inputs and outputs keep their float32 type; every border crossing gets a ``Cast``.
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    floats = float_tensors(model)
    rewriter = _Rewriter(g, floats, fp16_region(g, floats, keep_fp32_ops))
    for i, n in enumerate(g.node):
        rewriter.visit(i, n)
    del g.node[:]
    g.node.extend(rewriter.new_nodes)
    used = {x for n in g.node for x in n.input}
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    del g.value_info[:]
    onnx.checker.check_model(model, full_check=True)
    return model


class _Rewriter:
    """Rebuilds a graph's node list node by node, the FP16 region's nodes rewired to FP16 tensors."""

    def __init__(self, g: onnx.GraphProto, floats: set[str], region: set[int]):
        self.g, self.floats, self.region = g, floats, region
        self.inits = {t.name: t for t in g.initializer}
        self.producer = {o: i for i, n in enumerate(g.node) for o in n.output}
        self.users: dict[str, set[int]] = {}
        for i, n in enumerate(g.node):
            for name in n.input:
                self.users.setdefault(name, set()).add(i)
        self.outputs = {o.name for o in g.output}
        self.half: dict[str, str] = {}  # float32 tensor -> its FP16 counterpart's name
        self.new_nodes: list[onnx.NodeProto] = []

    def fp16_of(self, name: str) -> str:
        """The FP16 name of a float32 tensor read inside the region (a converted initializer or a Cast)."""
        if name in self.half:
            return self.half[name]
        if name in self.inits:
            t16 = numpy_helper.from_array(numpy_helper.to_array(self.inits[name]).astype(np.float16), name + ".fp16")
            self.g.initializer.append(t16)
            self.half[name] = t16.name
        else:
            self.half[name] = name + ".fp16"
            cast = helper.make_node("Cast", [name], [self.half[name]], name=name + ".to_fp16", to=FLOAT16)
            self.new_nodes.append(cast)
        return self.half[name]

    def visit(self, i: int, n: onnx.NodeProto) -> None:
        if i not in self.region:
            self.new_nodes.append(n)
            return
        for k, name in enumerate(n.input):
            if name in self.floats and (name in self.inits or self.producer.get(name) not in self.region):
                n.input[k] = self.fp16_of(name)
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == FLOAT:
                a.i = FLOAT16
        self.new_nodes.append(n)
        for k, name in enumerate(n.output):
            if name in self.floats:
                self._output_to_fp16(n, k, name)

    def _output_to_fp16(self, n: onnx.NodeProto, k: int, name: str) -> None:
        # rename the FP16 output; a float32 copy keeps the old name for readers outside the region
        users = self.users.get(name, ())
        n.output[k] = self.half[name] = name + ".fp16"
        for j in users:
            if j in self.region:
                rewire = self.g.node[j]
                rewire.input[:] = [self.half[name] if x == name else x for x in rewire.input]
        if name in self.outputs or any(j not in self.region for j in users):
            self.new_nodes.append(helper.make_node("Cast", [self.half[name]], [name], name=name + ".to_fp32", to=FLOAT))
