"""The execution schedule of a model (docs/model-format.md, "Execution schedule and states").

A run of a model is a sequence of **executions** e_1 .. e_N, a pure function of the model (its header and
tables) and, in generate mode, of the prompt length P and the token count N of the input. Each execution
reads a few **slots** of the state (mlkit.state) and writes exactly one; the split dispute game bisects over
the states S_0 .. S_N and checks one execution in the VM (the node guest, `mlkit/guest/mlkit-exec.elf`).

This module is the Python mirror of `mlkit/csrc/schedule.c`, function for function:

    Schedule.__init__   mlk_sched_init     attention index of each node, executions per step, schedulable?
    tensor_slot         tensor_slot        the slot of a tensor (activations only)
    kv_slot             kv_slot            the slot of the a-th attention node's KV cache
    _add_read           add_read           insert a slot into a sorted read list (once)
    Schedule._node      node_entry         the NODE / KV_APPEND / ATTEND execution of node j
    Schedule.__len__    mlk_sched_len      N_exec
    Schedule.entry      mlk_sched_entry    execution k (1-based); past the end a no-op

`tests/mlkit/test_schedule.py` holds the two equal on the reference models and on random models.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

from mlkit.format import Mode, Model, ModelFormatError, Op
from mlkit.state import MAX_READS, SLOT_CONTROL, SLOT_INPUT, SLOT_OUTPUT, SLOT_TENSOR0


class ExecKind(IntEnum):
    """The kinds of execution (the codes of mlkit.h, MLK_X_*)."""

    NOOP = 0  # past the last execution: writes SLOT_OUTPUT's old value (a fixed point)
    INPUT = 1  # plain mode: graph input `arg` from the input payload
    NODE = 2  # node `arg` (in generate mode an attention node is KV_APPEND then ATTEND instead)
    OUTPUT = 3  # SLOT_OUTPUT = keccak256(output payload)
    CONTROL_INIT = 4  # generate mode: the control words from the input payload
    FEED_TOKEN = 5  # generate mode: the token of step `step` into graph input 0
    FEED_POS = 6  # generate mode: the position `step` into graph input 1
    KV_APPEND = 7  # generate mode: attention node `arg` appends this step's k and v to its KV cache
    ATTEND = 8  # generate mode: attention node `arg` attends over its KV cache
    ADVANCE = 9  # generate mode: the step's token appended (full steps), done set, s += 1


@dataclass(frozen=True)
class Exec:
    """One execution: it reads `reads` (ascending, distinct) and writes `out_slot`."""

    kind: ExecKind
    arg: int  # INPUT: graph input index; NODE, KV_APPEND, ATTEND: node index; otherwise 0
    step: int  # generate mode: the step s of FEED_TOKEN .. ADVANCE; otherwise 0
    out_slot: int
    reads: tuple[int, ...]


def tensor_slot(tid: int) -> int:
    """The slot of activation tensor `tid`."""
    return SLOT_TENSOR0 + tid


def kv_slot(model: Model, a: int) -> int:
    """The slot of the KV cache of the a-th attention node (generate mode)."""
    return SLOT_TENSOR0 + len(model.tensors) + a


def _add_read(reads: list[int], slot: int) -> None:
    if slot not in reads:
        reads.append(slot)
        reads.sort()


def prefill_nodes(model: Model) -> list[bool]:
    """Generate mode: the nodes that run on prefill steps (the attention nodes and their ancestors; graph.c
    marks them in mlk_load)."""
    needed = [False] * len(model.tensors)
    marks = [False] * len(model.nodes)
    for j in range(len(model.nodes) - 1, -1, -1):
        node = model.nodes[j]
        if node.op == Op.ATTENTION or needed[node.output]:
            marks[j] = True
            for t in node.inputs:
                needed[t] = True
    return marks


class Schedule:
    """The schedule of `model` (generate mode: for prompt length `prompt_len` and `new_tokens` tokens).

    Raises ModelFormatError for a model the split game cannot run: a plain model whose OUTPUT would read
    more than MAX_READS slots (more than 8 distinct activation graph outputs)."""

    def __init__(self, model: Model, prompt_len: int = 0, new_tokens: int = 0) -> None:
        self.model = model
        self.generate = model.mode == Mode.GENERATE
        self.prompt_len, self.new_tokens = (prompt_len, new_tokens) if self.generate else (0, 0)
        if self.generate and (prompt_len < 1 or new_tokens < 1):
            raise ValueError("generate mode: the prompt length and the token count are >= 1")
        self.attn = [-1] * len(model.nodes)
        n_attn = 0
        for j, node in enumerate(model.nodes):
            if node.op == Op.ATTENTION:
                self.attn[j] = n_attn
                n_attn += 1
        self.prefill = prefill_nodes(model) if self.generate else [False] * len(model.nodes)
        self.full_execs = self.pre_execs = 0  # node executions of a full / a prefill step
        for j in range(len(model.nodes)):
            n = 2 if self.generate and self.attn[j] >= 0 else 1
            self.full_execs += n
            if self.prefill[j]:
                self.pre_execs += n
        if not self.generate:
            outs = {t for t in model.outputs if model.tensors[t].data is None}
            if len(outs) > MAX_READS:
                raise ModelFormatError(
                    f"the split game's OUTPUT execution reads at most {MAX_READS} slots; this model has "
                    f"{len(outs)} activation outputs"
                )

    def __len__(self) -> int:
        """N_exec: plain mode n_inputs + n_nodes + 1; generate mode 1 + (P-1) (3 + prefill executions)
        + N (3 + executions of every node) + 1."""
        m = self.model
        if not self.generate:
            return len(m.inputs) + len(m.nodes) + 1
        return 1 + (self.prompt_len - 1) * (3 + self.pre_execs) + self.new_tokens * (3 + self.full_execs) + 1

    def _node(self, j: int, kind: ExecKind, step: int) -> Exec:
        m, node = self.model, self.model.nodes[j]
        reads: list[int] = []
        if self.generate:
            _add_read(reads, SLOT_CONTROL)
        for t in node.inputs:
            if m.tensors[t].data is None:
                _add_read(reads, tensor_slot(t))
        out = tensor_slot(node.output)
        if kind in (ExecKind.KV_APPEND, ExecKind.ATTEND):
            _add_read(reads, kv_slot(m, self.attn[j]))
            if kind == ExecKind.KV_APPEND:
                out = kv_slot(m, self.attn[j])
        return Exec(kind, j, step, out, tuple(reads))

    def entry(self, k: int) -> Exec:
        """Execution k (1-based). Past N_exec: NOOP."""
        m = self.model
        if k < 1:
            raise ValueError(f"executions are numbered from 1, got {k}")
        if not self.generate:
            n_in, n_nodes = len(m.inputs), len(m.nodes)
            if k <= n_in:
                return Exec(ExecKind.INPUT, k - 1, 0, tensor_slot(m.inputs[k - 1]), (SLOT_INPUT,))
            if k <= n_in + n_nodes:
                return self._node(k - n_in - 1, ExecKind.NODE, 0)
            if k == n_in + n_nodes + 1:
                reads: list[int] = []
                for t in m.outputs:
                    if m.tensors[t].data is None:
                        _add_read(reads, tensor_slot(t))
                return Exec(ExecKind.OUTPUT, 0, 0, SLOT_OUTPUT, tuple(reads))
            return Exec(ExecKind.NOOP, 0, 0, SLOT_OUTPUT, ())
        if k == 1:
            return Exec(ExecKind.CONTROL_INIT, 0, 0, SLOT_CONTROL, (SLOT_INPUT,))
        p, n = self.prompt_len, self.new_tokens
        pre_len, full_len = 3 + self.pre_execs, 3 + self.full_execs
        r = k - 2
        if r < (p - 1) * pre_len:
            step, off, full, length = r // pre_len, r % pre_len, False, pre_len
        elif r < (p - 1) * pre_len + n * full_len:
            r -= (p - 1) * pre_len
            step, off, full, length = p - 1 + r // full_len, r % full_len, True, full_len
        elif r == (p - 1) * pre_len + n * full_len:
            return Exec(ExecKind.OUTPUT, 0, 0, SLOT_OUTPUT, (SLOT_CONTROL,))
        else:
            return Exec(ExecKind.NOOP, 0, 0, SLOT_OUTPUT, (SLOT_CONTROL,))
        if off == 0:
            return Exec(ExecKind.FEED_TOKEN, 0, step, tensor_slot(m.inputs[0]), (SLOT_CONTROL,))
        if off == 1:
            return Exec(ExecKind.FEED_POS, 0, step, tensor_slot(m.inputs[1]), (SLOT_CONTROL,))
        if off == length - 1:
            reads = [SLOT_CONTROL]
            out = m.outputs[0]
            if full and m.tensors[out].data is None:
                _add_read(reads, tensor_slot(out))
            return Exec(ExecKind.ADVANCE, 0, step, SLOT_CONTROL, tuple(reads))
        idx = off - 2
        for j in range(len(m.nodes)):
            if not (full or self.prefill[j]):
                continue
            if self.attn[j] < 0:
                if idx == 0:
                    return self._node(j, ExecKind.NODE, step)
                idx -= 1
            else:
                if idx < 2:
                    return self._node(j, ExecKind.KV_APPEND if idx == 0 else ExecKind.ATTEND, step)
                idx -= 2
        raise AssertionError("unreachable: the step's offsets are counted above")

    def __iter__(self) -> Iterator[Exec]:
        """Executions 1 .. N_exec in order (the same entries as `entry`, walked step by step)."""
        m = self.model
        if not self.generate:
            for k in range(1, len(self) + 1):
                yield self.entry(k)
            return
        yield self.entry(1)
        node_execs = {
            full: [
                self._node(j, kind, 0)
                for j in range(len(m.nodes))
                if full or self.prefill[j]
                for kind in ((ExecKind.KV_APPEND, ExecKind.ATTEND) if self.attn[j] >= 0 else (ExecKind.NODE,))
            ]
            for full in (False, True)
        }
        for step in range(self.prompt_len + self.new_tokens - 1):
            full = step >= self.prompt_len - 1
            yield Exec(ExecKind.FEED_TOKEN, 0, step, tensor_slot(m.inputs[0]), (SLOT_CONTROL,))
            yield Exec(ExecKind.FEED_POS, 0, step, tensor_slot(m.inputs[1]), (SLOT_CONTROL,))
            for e in node_execs[full]:
                yield Exec(e.kind, e.arg, step, e.out_slot, e.reads)
            reads = [SLOT_CONTROL]
            if full and m.tensors[m.outputs[0]].data is None:
                _add_read(reads, tensor_slot(m.outputs[0]))
            yield Exec(ExecKind.ADVANCE, 0, step, SLOT_CONTROL, tuple(reads))
        yield self.entry(len(self))


def schedule_of(model: Model, payload: bytes | None = None) -> Schedule:
    """The schedule of `model` for an input payload (generate mode: P and N are read from it)."""
    if model.mode != Mode.GENERATE:
        return Schedule(model)
    if payload is None:
        raise ValueError("a generate-mode schedule depends on the input (P and N)")
    from mlkit.io import decode_payload

    prompt, n_new = decode_payload(payload)
    return Schedule(model, int(prompt.size), int(n_new.reshape(-1)[0]))
