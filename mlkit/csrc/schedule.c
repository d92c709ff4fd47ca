/*
 * schedule.c - the execution schedule of a model: the executions e_1 .. e_N
 * of a run as the split dispute game sees them (docs/model-format.md,
 * "Execution schedule and states").  A pure function of the loaded model
 * and, in generate mode, of the prompt length P and the token count N.
 *
 * mlkit/schedule.py is the Python mirror, function for function:
 *   sched_counts, mlk_sched_check   Schedule.__init__
 *   tensor_slot, kv_slot            tensor_slot, kv_slot
 *   add_read                        _add_read
 *   node_entry                      Schedule._node
 *   mlk_sched_len                   Schedule.__len__
 *   mlk_sched_entry                 Schedule.entry
 * (the prefill marks come from mlk_load; Python: prefill_nodes).
 */
#include "mlkit.h"

static uint32_t tensor_slot(uint32_t t) { return MLK_SLOT_TENSOR0 + t; }

static uint32_t kv_slot(const mlk_ctx *c, uint32_t a) { return MLK_SLOT_TENSOR0 + c->n_tensors + a; }

/* Insert slot into the ascending list e->reads, once.  The callers stay
 * within MLK_MAX_READS (a node has at most 6 inputs; mlk_sched_check bounds
 * the outputs). */
static void add_read(mlk_entry *e, uint32_t slot)
{
    uint32_t i = 0;
    while (i < e->n_reads && e->reads[i] < slot)
        i++;
    if (i < e->n_reads && e->reads[i] == slot)
        return;
    for (uint32_t k = e->n_reads; k > i; k--)
        e->reads[k] = e->reads[k - 1];
    e->reads[i] = slot;
    e->n_reads++;
}

static void set_entry(mlk_entry *e, uint32_t kind, uint32_t arg, uint32_t step, uint32_t out)
{
    e->kind = kind, e->arg = arg, e->step = step, e->out_slot = out, e->n_reads = 0;
}

static int is_act(const mlk_ctx *c, uint32_t t) { return c->t[t].kind == MLK_KIND_ACT; }

/* Node executions of a full step and of a prefill step (generate mode: an
 * attention node is two, KV_APPEND and ATTEND). */
static void sched_counts(const mlk_ctx *c, uint32_t *pre, uint32_t *full)
{
    const int gen = c->mode == MLK_MODE_GENERATE;
    *pre = *full = 0;
    for (uint32_t j = 0; j < c->n_nodes; j++) {
        uint32_t n = gen && c->nodes[j].op == OP_ATTENTION ? 2u : 1u;
        *full += n;
        if (c->nodes[j].prefill)
            *pre += n;
    }
}

/* Can the split game run this model?  A plain model's OUTPUT reads its
 * activation graph outputs: at most MLK_MAX_READS distinct ones. */
int mlk_sched_check(const mlk_ctx *c)
{
    if (c->mode == MLK_MODE_GENERATE)
        return MLK_OK;
    mlk_entry e;
    e.n_reads = 0;
    for (uint32_t i = 0; i < c->n_outputs; i++) {
        uint32_t t = c->outputs[i];
        if (!is_act(c, t))
            continue;
        uint32_t slot = tensor_slot(t), dup = 0;
        for (uint32_t k = 0; k < e.n_reads; k++)
            dup |= e.reads[k] == slot;
        if (!dup && e.n_reads == MLK_MAX_READS)
            return MLK_E_MODEL;
        add_read(&e, slot);
    }
    return MLK_OK;
}

/* The execution `kind` (NODE, KV_APPEND, ATTEND) of node j at `step`. */
static void node_entry(const mlk_ctx *c, uint32_t j, uint32_t kind, uint32_t step, mlk_entry *e)
{
    const mlk_node *nd = &c->nodes[j];
    set_entry(e, kind, j, step, tensor_slot(nd->out));
    if (c->mode == MLK_MODE_GENERATE)
        add_read(e, MLK_SLOT_CONTROL);
    for (uint32_t k = 0; k < nd->n_in; k++)
        if (is_act(c, nd->in[k]))
            add_read(e, tensor_slot(nd->in[k]));
    if (kind == MLK_X_KV_APPEND || kind == MLK_X_ATTEND) {
        uint32_t a = 0; /* attention nodes before j */
        for (uint32_t i = 0; i < j; i++)
            a += c->nodes[i].op == OP_ATTENTION;
        add_read(e, kv_slot(c, a));
        if (kind == MLK_X_KV_APPEND)
            e->out_slot = kv_slot(c, a);
    }
}

/* N_exec: plain n_inputs + n_nodes + 1; generate 1 + (P-1) (3 + prefill
 * executions) + N (3 + every node's executions) + 1. */
uint64_t mlk_sched_len(const mlk_ctx *c, uint32_t n_prompt, uint32_t n_new)
{
    if (c->mode != MLK_MODE_GENERATE)
        return (uint64_t)c->n_inputs + c->n_nodes + 1u;
    uint32_t pre, full;
    sched_counts(c, &pre, &full);
    return 2u + (uint64_t)(n_prompt - 1u) * (3u + pre) + (uint64_t)n_new * (3u + full);
}

/* Execution k (1-based); past the end a NOOP.  Generate mode: n_prompt,
 * n_new >= 1 and n_prompt + n_new - 1 <= MLK_MAX_CTX (the callers validated
 * them), so N_exec < 2^30 and the arithmetic below is 32-bit (the guest has
 * no 64-bit division). */
void mlk_sched_entry(const mlk_ctx *c, uint32_t n_prompt, uint32_t n_new, uint64_t k, mlk_entry *e)
{
    if (c->mode != MLK_MODE_GENERATE) {
        const uint64_t n_in = c->n_inputs, n_nodes = c->n_nodes;
        if (k <= n_in) {
            set_entry(e, MLK_X_INPUT, (uint32_t)(k - 1), 0, tensor_slot(c->inputs[k - 1]));
            add_read(e, MLK_SLOT_INPUT);
        } else if (k <= n_in + n_nodes) {
            node_entry(c, (uint32_t)(k - n_in - 1), MLK_X_NODE, 0, e);
        } else if (k == n_in + n_nodes + 1) {
            set_entry(e, MLK_X_OUTPUT, 0, 0, MLK_SLOT_OUTPUT);
            for (uint32_t i = 0; i < c->n_outputs; i++)
                if (is_act(c, c->outputs[i]))
                    add_read(e, tensor_slot(c->outputs[i]));
        } else {
            set_entry(e, MLK_X_NOOP, 0, 0, MLK_SLOT_OUTPUT);
        }
        return;
    }
    if (k == 1) {
        set_entry(e, MLK_X_CONTROL_INIT, 0, 0, MLK_SLOT_CONTROL);
        add_read(e, MLK_SLOT_INPUT);
        return;
    }
    const uint64_t total = mlk_sched_len(c, n_prompt, n_new);
    if (k >= total) {
        set_entry(e, k == total ? MLK_X_OUTPUT : MLK_X_NOOP, 0, 0, MLK_SLOT_OUTPUT);
        add_read(e, MLK_SLOT_CONTROL);
        return;
    }
    uint32_t pre, full_n;
    sched_counts(c, &pre, &full_n);
    const uint32_t pre_len = 3u + pre, full_len = 3u + full_n, pre_total = (n_prompt - 1u) * pre_len;
    uint32_t r = (uint32_t)(k - 2), len, step, off;
    int full;
    if (r < pre_total) {
        step = r / pre_len, off = r % pre_len, full = 0, len = pre_len;
    } else {
        r -= pre_total;
        step = n_prompt - 1u + r / full_len, off = r % full_len, full = 1, len = full_len;
    }
    if (off == 0 || off == 1) {
        set_entry(e, off == 0 ? MLK_X_FEED_TOKEN : MLK_X_FEED_POS, 0, step, tensor_slot(c->inputs[off]));
        add_read(e, MLK_SLOT_CONTROL);
        return;
    }
    if (off == len - 1) {
        set_entry(e, MLK_X_ADVANCE, 0, step, MLK_SLOT_CONTROL);
        add_read(e, MLK_SLOT_CONTROL);
        if (full && is_act(c, c->outputs[0]))
            add_read(e, tensor_slot(c->outputs[0]));
        return;
    }
    uint32_t idx = off - 2u;
    for (uint32_t j = 0; j < c->n_nodes; j++) {
        if (!full && !c->nodes[j].prefill)
            continue;
        if (c->nodes[j].op != OP_ATTENTION) {
            if (idx == 0) {
                node_entry(c, j, MLK_X_NODE, step, e);
                return;
            }
            idx -= 1;
        } else {
            if (idx < 2) {
                node_entry(c, j, idx == 0 ? MLK_X_KV_APPEND : MLK_X_ATTEND, step, e);
                return;
            }
            idx -= 2;
        }
    }
    set_entry(e, MLK_X_NOOP, 0, 0, MLK_SLOT_OUTPUT); /* unreachable: off < len - 1 */
}
