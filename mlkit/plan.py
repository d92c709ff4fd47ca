"""Bounded executions: no execution of the split game may need more than `MAX_EXEC_STEPS` VM steps
(docs/model-format.md, "Execution schedule and states").

`estimate(model, j)` is a conservative model of the node guest's VM steps for an execution of node j
(calibrated on the node guest, `bench/exec.py` prints it next to the measured steps), and `bound_executions`
splits the nodes whose estimate is over `TILE_BUDGET` into tiles plus `concat` nodes: row tiles of a linear
(rows of its constant weight, i.e. output features), output-channel groups of a conv2d / conv_transpose2d
(of its constant weight). A tile computes exactly the dot products of its part of the output, in the same
order, so a tiled model's outputs are bit for bit the untiled model's. The exporters (mlkit.export, the ONNX
importer) plan every model they write.

Nodes that cannot be tiled this way (an elementwise op over a huge tensor, a matmul of two activations, an
attention over a long context) keep their size: `plan` reports them (`Plan.over`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mlkit.format import MAX_IN, Mode, Model, Node, Op, Tensor

MAX_EXEC_STEPS = 1 << 31  # the bound of the split game's bottom level (the contracts' maxExecSteps)
TILE_BUDGET = 1 << 30  # the planner tiles an execution estimated over this (2x margin on the estimate)

# The cost model, in VM steps (measured on the node guest; bench/exec.py compares): a fixed cost, the model's
# tables (read and validated), every byte read (slots, constants), every byte written (its blob id: keccak in
# the VM), multiply-adds of the dot-product ops, and per-element costs of the other ops.
BASE_STEPS = 60_000
TABLE_STEPS_PER_BYTE = 4
NODE_STEPS = 3_000  # validating one node of the tables
READ_STEPS_PER_BYTE = 2
HASH_STEPS_PER_BYTE = 150
MAC_STEPS = 85
ELEMENT_STEPS = {
    Op.RELU: 12,
    Op.LEAKY_RELU: 100,
    Op.TANH: 1_200,
    Op.SIGMOID: 1_400,
    Op.GELU: 1_700,
    Op.SOFTMAX: 1_600,
    Op.LAYERNORM: 550,
    Op.BATCHNORM: 150,
    Op.ADD: 90,
    Op.MUL: 70,
    Op.TRANSPOSE: 12,
    Op.RESHAPE: 4,
    Op.CONCAT: 4,
    Op.EMBEDDING: 4,
    Op.ARGMAX: 50,
}
TAP_STEPS = 60  # pooling: per window element
EXP_STEPS = 1_600  # attention: per score (exp, division)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _tables_bytes(model: Model) -> int:
    return 32 + 32 * len(model.tensors) + 80 * len(model.nodes) + 4 * (len(model.inputs) + len(model.outputs))


def fixed_steps(model: Model) -> int:
    """The part of every execution's cost that does not depend on the execution: the model's tables."""
    return BASE_STEPS + TABLE_STEPS_PER_BYTE * _tables_bytes(model) + NODE_STEPS * len(model.nodes)


def macs(model: Model, node: Node, out_tensor: Tensor | None = None) -> int:
    """Multiply-adds of a dot-product node (linear, matmul, conv2d, conv_transpose2d); 0 for the others."""
    t = model.tensors
    out = (out_tensor or t[node.output]).shape
    if node.op == Op.LINEAR:
        return _numel(out) * t[node.inputs[0]].shape[-1]
    if node.op == Op.MATMUL:
        return _numel(out) * t[node.inputs[0]].shape[-1]
    if node.op == Op.CONV2D:
        w = t[node.inputs[1]].shape
        return _numel(out) * w[1] * w[2] * w[3]
    if node.op == Op.CONV_TRANSPOSE2D:
        w = t[node.inputs[1]].shape
        stride = node.ints[0] * node.ints[1]
        return _numel(out) * w[0] * -(-w[2] * w[3] // stride)
    return 0


def tile_of(node: Node) -> tuple[int, int] | None:
    """(first, count) of a tile node (a linear's rows, a conv's output channels), None for a whole node."""
    at = {Op.LINEAR: 0, Op.MATMUL: 0, Op.CONV2D: 4, Op.CONV_TRANSPOSE2D: 6}.get(node.op)
    if at is None or len(node.ints) < at + 2 or node.ints[at + 1] == 0:
        return None
    return node.ints[at], node.ints[at + 1]


def _const_bytes(model: Model, node: Node) -> int:
    """Bytes of constants the node reads (a tile: its part of the weight and bias)."""
    t = model.tensors
    tile = tile_of(node)
    total = 0
    for k, tid in enumerate(node.inputs):
        if t[tid].data is None or tid in node.inputs[:k]:
            continue
        size = 4 * t[tid].numel
        if tile is not None and k == 2:
            size = 4 * tile[1]
        elif tile is not None and k == 1 and node.op in (Op.LINEAR, Op.CONV2D):
            size = size // t[tid].shape[0] * tile[1]
        elif node.op == Op.EMBEDDING and k == 1:
            size = 4 * t[tid].shape[1] * t[node.inputs[0]].numel  # the rows of the ids
        total += size
    return total


def _cost(model: Model, node: Node, out: Tensor, position: int | None = None) -> int:
    t = model.tensors
    reads = sum(4 * t[i].numel for i in dict.fromkeys(node.inputs) if t[i].data is None)
    steps = fixed_steps(model) + READ_STEPS_PER_BYTE * (reads + _const_bytes(model, node))
    steps += HASH_STEPS_PER_BYTE * 4 * out.numel
    if node.op in (Op.LINEAR, Op.MATMUL, Op.CONV2D, Op.CONV_TRANSPOSE2D):
        steps += MAC_STEPS * macs(model, node, out)
    elif node.op in (Op.MAXPOOL2D, Op.AVGPOOL2D):
        steps += TAP_STEPS * out.numel * node.ints[0] * node.ints[1]
    elif node.op == Op.ATTENTION:
        rows, c = t[node.inputs[0]].shape[0], out.shape[1]
        positions = rows
        if model.mode == Mode.GENERATE:  # ATTEND over the KV cache, which it reads
            positions = node.ints[1] if position is None else position + 1
            steps += READ_STEPS_PER_BYTE * 8 * positions * c
        steps += MAC_STEPS * 2 * rows * positions * c + EXP_STEPS * node.ints[0] * rows * positions
    else:
        steps += ELEMENT_STEPS.get(node.op, 2_000) * max(out.numel, t[node.inputs[0]].numel)
    return steps


def estimate(model: Model, j: int, position: int | None = None) -> int:
    """Estimated VM steps of the node guest running node j (an attention node in generate mode: its ATTEND at
    `position`, default the last position of its context)."""
    node = model.nodes[j]
    return _cost(model, node, model.tensors[node.output], position)


def kv_append_estimate(model: Model, j: int, position: int | None = None) -> int:
    """Estimated VM steps of KV_APPEND of attention node j (generate mode) at `position` (default the last):
    it reads the cache and hashes the grown one."""
    node = model.nodes[j]
    c = model.tensors[node.output].shape[1]
    positions = node.ints[1] if position is None else position + 1
    size = 8 * positions * c
    return fixed_steps(model) + (READ_STEPS_PER_BYTE + HASH_STEPS_PER_BYTE) * size


def _tileable(model: Model, node: Node) -> tuple[int, int] | None:
    """(span, output axis) of a node that can be tiled: a whole linear, conv2d or conv_transpose2d with a
    constant weight (span: its output features or channels)."""
    t = model.tensors
    if node.op not in (Op.LINEAR, Op.CONV2D, Op.CONV_TRANSPOSE2D) or t[node.inputs[1]].data is None:
        return None
    if tile_of(node) is not None:
        return None
    out = t[node.output].shape
    return (out[-1], len(out) - 1) if node.op == Op.LINEAR else (out[1], 1)


def _tile_nodes(tensors: list[Tensor], node: Node, span: int, axis: int, parts: int) -> list[Node]:
    """The tiles of `node` (`parts` near-equal parts of its span, the larger first) and the concat nodes that
    join them into its output (trees of at most MAX_IN inputs); new tensors are appended to `tensors`."""
    out = tensors[node.output]
    whole = {Op.LINEAR: 0, Op.CONV2D: 4, Op.CONV_TRANSPOSE2D: 6}[node.op]
    ints = (*node.ints, *([0] * (whole - len(node.ints))))

    def new_tensor(size: int) -> int:
        shape = list(out.shape)
        shape[axis] = size
        tensors.append(Tensor(out.dtype, tuple(shape)))
        return len(tensors) - 1

    nodes: list[Node] = []
    pieces: list[int] = []
    first = 0
    for p in range(parts):
        count = span // parts + (1 if p < span % parts else 0)
        pieces.append(new_tensor(count))
        nodes.append(Node(node.op, node.inputs, pieces[-1], (*ints, first, count), node.floats))
        first += count
    while len(pieces) > 1:
        groups = [pieces[i : i + MAX_IN] for i in range(0, len(pieces), MAX_IN)]
        pieces = []
        for g in groups:
            size = sum(tensors[i].shape[axis] for i in g)
            target = node.output if len(groups) == 1 else new_tensor(size)
            nodes.append(Node(Op.CONCAT, tuple(g), target, (axis,)))
            pieces.append(target)
    return nodes


def _tile_cost(model: Model, node: Node, span: int, axis: int, parts: int) -> int:
    """The estimate of the largest tile (the first) of `node` split in `parts`."""
    out = model.tensors[node.output]
    count = span // parts + (1 if span % parts else 0)
    shape = list(out.shape)
    shape[axis] = count
    whole = {Op.LINEAR: 0, Op.CONV2D: 4, Op.CONV_TRANSPOSE2D: 6}[node.op]
    ints = (*node.ints, *([0] * (whole - len(node.ints))), 0, count)
    return _cost(
        model, Node(node.op, node.inputs, node.output, ints, node.floats), Tensor(out.dtype, tuple(shape))
    )


@dataclass
class Plan:
    """A planned model, the nodes split (index in the original model -> tiles), and the executions whose
    estimate stays over MAX_EXEC_STEPS (node index in the planned model -> estimate)."""

    model: Model
    tiled: dict[int, int] = field(default_factory=dict)
    over: dict[int, int] = field(default_factory=dict)

    def largest(self) -> tuple[int, int]:
        """(estimated steps, node index) of the planned model's largest node execution."""
        return max(((estimate(self.model, j), j) for j in range(len(self.model.nodes))), default=(0, -1))


def plan(model: Model, budget: int = TILE_BUDGET) -> Plan:
    """Split every tileable node whose estimate is over `budget` into the fewest near-equal tiles whose
    estimates are within it."""
    tensors = list(model.tensors)
    planned = Model(tensors, [], list(model.inputs), list(model.outputs), model.mode, model.gen_eos)
    result = Plan(planned)
    for j, node in enumerate(model.nodes):
        shape = _tileable(model, node)
        if shape is None or shape[0] < 2 or estimate(model, j) <= budget:
            planned.nodes.append(node)
            continue
        span, axis = shape
        parts = next(
            (p for p in range(2, span + 1) if _tile_cost(model, node, span, axis, p) <= budget), span
        )
        planned.nodes.extend(_tile_nodes(tensors, node, span, axis, parts))
        result.tiled[j] = parts
    result.over = {j: c for j in range(len(planned.nodes)) if (c := estimate(planned, j)) > MAX_EXEC_STEPS}
    return result


def bound_executions(model: Model, budget: int = TILE_BUDGET) -> Model:
    """`plan(model, budget).model`: the model with its big nodes tiled."""
    return plan(model, budget).model
