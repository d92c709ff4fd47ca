/*
 * exec.c - one execution of the split game (docs/model-format.md,
 * "Execution schedule and states"): from the values of the slots it reads
 * (their bytes come through c->slot_data) compute the new value of the slot
 * it writes.  The node guest (guest.c built with -DMLKIT_EXEC) runs one, the
 * native library runs every execution of a request with it (host.c), so the
 * two builds compute each state the same way.
 *
 * A slot's bytes: a tensor's elements, 4 bytes each, big-endian, row-major,
 * f32 NaNs written as 0x7FC00000 (the builds may produce different NaN bits;
 * they never differ otherwise); the control words (i32, big-endian); a KV
 * cache's floats [2, positions, C] (K rows, then V rows).  A slot's value is
 * the blob id of its bytes (docs/vm-spec.md section 6), except SLOT_OUTPUT:
 * keccak256(output payload).
 *
 * Memory is charged as everywhere in mlkit (docs/model-format.md, "Memory"),
 * here in the same order in both builds: every slot's bytes as they are read,
 * every constant a node uses (its whole size), the tensors and buffers an
 * execution makes, the blob id's key table.  Platform copies (byte order)
 * are not charged.
 */
#include "mlkit.h"

/* The VM's blobs (docs/vm-spec.md section 6; guest.c checks these against
 * mipsvm/csrc/vmabi.h). */
#define BLOB_CHUNK 16384u
#define BLOB_KEYS_PER_NODE 512u
#define BLOB_MAX_MANIFEST_KEYS 511u
#define KEY_TYPE_KECCAK 2u

/* ---- blob ids -------------------------------------------------------------- */

static void keccak_key(const uint8_t *data, uint32_t len, uint8_t key[32])
{
    mlk_keccak256(data, len, key);
    key[0] = KEY_TYPE_KECCAK;
}

/* The blob id of data[0 .. len): the keys of its chunks, grouped by 512 into
 * nodes until at most 511 remain, the manifest u64 length ++ those keys. */
int mlk_blob_id(mlk_ctx *c, const uint8_t *data, uint32_t len, uint8_t id[32])
{
    uint32_t n = len / BLOB_CHUNK + (len % BLOB_CHUNK != 0);
    if (n == 0)
        n = 1; /* an empty blob is one empty chunk */
    uint8_t *buf = (uint8_t *)mlk_alloc(c, 8u + 32u * n), *keys = buf + 8;
    if (!buf)
        return MLK_E_NOMEM;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t off = i * BLOB_CHUNK, l = len - off < BLOB_CHUNK ? len - off : BLOB_CHUNK;
        keccak_key(data + off, l, keys + 32u * i);
    }
    /* in place: node i's key lands before the keys it hashes (read first) */
    while (n > BLOB_MAX_MANIFEST_KEYS) {
        uint32_t m = (n + BLOB_KEYS_PER_NODE - 1u) / BLOB_KEYS_PER_NODE;
        for (uint32_t i = 0; i < m; i++) {
            uint32_t first = i * BLOB_KEYS_PER_NODE, cnt = n - first;
            if (cnt > BLOB_KEYS_PER_NODE)
                cnt = BLOB_KEYS_PER_NODE;
            keccak_key(keys + 32u * first, 32u * cnt, keys + 32u * i);
        }
        n = m;
    }
    wr32(buf, 0);
    wr32(buf + 4, len);
    keccak_key(buf, 8u + 32u * n, id);
    return MLK_OK;
}

/* The end of a model's tables from its header (32 bytes), or 0 if the
 * counts are out of range (mlk_load rejects the model then). */
uint32_t mlk_tables_end(const uint8_t *h)
{
    uint32_t nt = rd32(h + 12), nn = rd32(h + 16), ni = rd16(h + 20), no = rd16(h + 22);
    if (nt > MLK_MAX_TENSORS || nn > MLK_MAX_NODES || ni > MLK_MAX_IO || no > MLK_MAX_IO)
        return 0;
    return MLK_HEADER_SIZE + nt * MLK_TENSOR_ENTRY + nn * MLK_NODE_ENTRY + 4u * (ni + no);
}

/* ---- states --------------------------------------------------------------------- */

/* ZERO[h]: the root of an empty subtree of height h (mlkit.state.zero_hashes;
 * tests/mlkit/test_split.py checks the roots against SlotTree). */
static const uint8_t ZERO[MLK_SLOT_DEPTH + 1][32] = {
    {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
     0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00},
    {0xad, 0x32, 0x28, 0xb6, 0x76, 0xf7, 0xd3, 0xcd, 0x42, 0x84, 0xa5, 0x44, 0x3f, 0x17, 0xf1, 0x96,
     0x2b, 0x36, 0xe4, 0x91, 0xb3, 0x0a, 0x40, 0xb2, 0x40, 0x58, 0x49, 0xe5, 0x97, 0xba, 0x5f, 0xb5},
    {0xb4, 0xc1, 0x19, 0x51, 0x95, 0x7c, 0x6f, 0x8f, 0x64, 0x2c, 0x4a, 0xf6, 0x1c, 0xd6, 0xb2, 0x46,
     0x40, 0xfe, 0xc6, 0xdc, 0x7f, 0xc6, 0x07, 0xee, 0x82, 0x06, 0xa9, 0x9e, 0x92, 0x41, 0x0d, 0x30},
    {0x21, 0xdd, 0xb9, 0xa3, 0x56, 0x81, 0x5c, 0x3f, 0xac, 0x10, 0x26, 0xb6, 0xde, 0xc5, 0xdf, 0x31,
     0x24, 0xaf, 0xba, 0xdb, 0x48, 0x5c, 0x9b, 0xa5, 0xa3, 0xe3, 0x39, 0x8a, 0x04, 0xb7, 0xba, 0x85},
    {0xe5, 0x87, 0x69, 0xb3, 0x2a, 0x1b, 0xea, 0xf1, 0xea, 0x27, 0x37, 0x5a, 0x44, 0x09, 0x5a, 0x0d,
     0x1f, 0xb6, 0x64, 0xce, 0x2d, 0xd3, 0x58, 0xe7, 0xfc, 0xbf, 0xb7, 0x8c, 0x26, 0xa1, 0x93, 0x44},
    {0x0e, 0xb0, 0x1e, 0xbf, 0xc9, 0xed, 0x27, 0x50, 0x0c, 0xd4, 0xdf, 0xc9, 0x79, 0x27, 0x2d, 0x1f,
     0x09, 0x13, 0xcc, 0x9f, 0x66, 0x54, 0x0d, 0x7e, 0x80, 0x05, 0x81, 0x11, 0x09, 0xe1, 0xcf, 0x2d},
    {0x88, 0x7c, 0x22, 0xbd, 0x87, 0x50, 0xd3, 0x40, 0x16, 0xac, 0x3c, 0x66, 0xb5, 0xff, 0x10, 0x2d,
     0xac, 0xdd, 0x73, 0xf6, 0xb0, 0x14, 0xe7, 0x10, 0xb5, 0x1e, 0x80, 0x22, 0xaf, 0x9a, 0x19, 0x68},
    {0xff, 0xd7, 0x01, 0x57, 0xe4, 0x80, 0x63, 0xfc, 0x33, 0xc9, 0x7a, 0x05, 0x0f, 0x7f, 0x64, 0x02,
     0x33, 0xbf, 0x64, 0x6c, 0xc9, 0x8d, 0x95, 0x24, 0xc6, 0xb9, 0x2b, 0xcf, 0x3a, 0xb5, 0x6f, 0x83},
    {0x98, 0x67, 0xcc, 0x5f, 0x7f, 0x19, 0x6b, 0x93, 0xba, 0xe1, 0xe2, 0x7e, 0x63, 0x20, 0x74, 0x24,
     0x45, 0xd2, 0x90, 0xf2, 0x26, 0x38, 0x27, 0x49, 0x8b, 0x54, 0xfe, 0xc5, 0x39, 0xf7, 0x56, 0xaf},
    {0xce, 0xfa, 0xd4, 0xe5, 0x08, 0xc0, 0x98, 0xb9, 0xa7, 0xe1, 0xd8, 0xfe, 0xb1, 0x99, 0x55, 0xfb,
     0x02, 0xba, 0x96, 0x75, 0x58, 0x50, 0x78, 0x71, 0x09, 0x69, 0xd3, 0x44, 0x0f, 0x50, 0x54, 0xe0},
    {0xf9, 0xdc, 0x3e, 0x7f, 0xe0, 0x16, 0xe0, 0x50, 0xef, 0xf2, 0x60, 0x33, 0x4f, 0x18, 0xa5, 0xd4,
     0xfe, 0x39, 0x1d, 0x82, 0x09, 0x23, 0x19, 0xf5, 0x96, 0x4f, 0x2e, 0x2e, 0xb7, 0xc1, 0xc3, 0xa5},
    {0xf8, 0xb1, 0x3a, 0x49, 0xe2, 0x82, 0xf6, 0x09, 0xc3, 0x17, 0xa8, 0x33, 0xfb, 0x8d, 0x97, 0x6d,
     0x11, 0x51, 0x7c, 0x57, 0x1d, 0x12, 0x21, 0xa2, 0x65, 0xd2, 0x5a, 0xf7, 0x78, 0xec, 0xf8, 0x92},
    {0x34, 0x90, 0xc6, 0xce, 0xeb, 0x45, 0x0a, 0xec, 0xdc, 0x82, 0xe2, 0x82, 0x93, 0x03, 0x1d, 0x10,
     0xc7, 0xd7, 0x3b, 0xf8, 0x5e, 0x57, 0xbf, 0x04, 0x1a, 0x97, 0x36, 0x0a, 0xa2, 0xc5, 0xd9, 0x9c},
    {0xc1, 0xdf, 0x82, 0xd9, 0xc4, 0xb8, 0x74, 0x13, 0xea, 0xe2, 0xef, 0x04, 0x8f, 0x94, 0xb4, 0xd3,
     0x55, 0x4c, 0xea, 0x73, 0xd9, 0x2b, 0x0f, 0x7a, 0xf9, 0x6e, 0x02, 0x71, 0xc6, 0x91, 0xe2, 0xbb},
    {0x5c, 0x67, 0xad, 0xd7, 0xc6, 0xca, 0xf3, 0x02, 0x25, 0x6a, 0xde, 0xdf, 0x7a, 0xb1, 0x14, 0xda,
     0x0a, 0xcf, 0xe8, 0x70, 0xd4, 0x49, 0xa3, 0xa4, 0x89, 0xf7, 0x81, 0xd6, 0x59, 0xe8, 0xbe, 0xcc},
};

/* The root of a state whose slots 0 .. n-1 hold values (32 bytes each; the
 * other slots are empty): a binary Merkle tree of MLK_SLOT_DEPTH levels,
 * interior nodes keccak256(left ++ right), empty subtrees the zero-hash
 * chain (mlkit.state.SlotTree).  nodes: scratch of n + 1 entries. */
void mlk_slot_root(const uint8_t *values, uint32_t n, uint8_t (*nodes)[32], uint8_t root[32])
{
    uint8_t pair[64];
    for (uint32_t i = 0; i < n; i++)
        mlk_memcpy(nodes[i], values + 32u * i, 32);
    for (uint32_t level = 0; level < MLK_SLOT_DEPTH; level++) {
        uint32_t m = (n + 1u) / 2u;
        for (uint32_t i = 0; i < m; i++) {
            mlk_memcpy(pair, nodes[2 * i], 32);
            mlk_memcpy(pair + 32, 2 * i + 1 < n ? nodes[2 * i + 1] : ZERO[level], 32);
            mlk_keccak256(pair, 64, nodes[i]);
        }
        n = m;
    }
    mlk_memcpy(root, n ? nodes[0] : ZERO[MLK_SLOT_DEPTH], 32);
}

/* ---- execution records ---------------------------------------------------------- */

/* u64 exec, u32 out_slot, old_value, new_value, u8 n_in, n_in x (u32 slot,
 * value), big-endian (mlkit.state.ExecRecord).  MLK_E_ORACLE if malformed. */
int mlk_record_parse(const uint8_t *p, uint32_t len, mlk_record *r)
{
    if (len < 77 || p[76] > MLK_MAX_READS || len != 77u + 36u * p[76])
        return MLK_E_ORACLE;
    r->exec = ((uint64_t)rd32(p) << 32) | rd32(p + 4);
    if (r->exec == 0)
        return MLK_E_ORACLE;
    r->out_slot = rd32(p + 8);
    r->old_value = p + 12;
    r->new_value = p + 44;
    r->n_reads = p[76];
    for (uint32_t i = 0; i < r->n_reads; i++) {
        r->slots[i] = rd32(p + 77 + 36 * i);
        r->values[i] = p + 81 + 36 * i;
    }
    return MLK_OK;
}

/* ---- slot bytes <-> tensors ------------------------------------------------------- */

static int is_nan_bits(uint32_t v) { return (v & 0x7FFFFFFFu) > 0x7F800000u; }

/* n words from native order to the slot encoding (big-endian, f32 NaNs
 * canonical); dst may be src on a big-endian host. */
static void put_words(uint8_t *dst, const uint32_t *src, uint32_t n, int f32)
{
    for (uint32_t i = 0; i < n; i++, dst += 4) {
        uint32_t v = src[i];
        if (f32 && is_nan_bits(v))
            v = SF_QNAN;
        wr32(dst, v);
    }
}

/* n words of the slot encoding in native order: in place on a big-endian
 * host (p is 4-aligned: blob buffers are), else an uncharged copy. */
static void *native_words(mlk_ctx *c, const uint8_t *p, uint32_t n)
{
#if MLK_HOST_BE
    if (((uintptr_t)p & 3u) == 0)
        return (void *)(uintptr_t)p;
#endif
    uint32_t *w = (uint32_t *)(c->get_raw ? c->get_raw(c, n ? 4u * n : 4u) : c->get(c, n ? 4u * n : 4u));
    if (w)
        for (uint32_t i = 0; i < n; i++)
            w[i] = rd32(p + 4u * i);
    return w;
}

/* Tensor t's slot bytes: in place in the guest (big-endian, every buffer
 * its own), an uncharged copy on the host. */
static const uint8_t *tensor_bytes(mlk_ctx *c, mlk_tensor *t)
{
    uint8_t *dst = (uint8_t *)t->data;
    if (!MLK_HOST_BE || c->get_raw)
        dst = (uint8_t *)(c->get_raw ? c->get_raw(c, t->numel * 4u) : c->get(c, t->numel * 4u));
    if (!dst)
        return 0;
    put_words(dst, (const uint32_t *)t->data, t->numel, t->dtype == MLK_DT_F32);
    return dst;
}

/* ---- one execution ------------------------------------------------------------------ */

/* The loaded slots of an execution. */
typedef struct {
    const uint8_t *input;     /* SLOT_INPUT's bytes */
    uint32_t input_len;
    const uint8_t *ctl;       /* SLOT_CONTROL's words (big-endian) */
    uint32_t ctl_len;
    const uint8_t *kv;        /* the KV cache slot's bytes (0 when empty) */
} loaded;

static uint32_t ctl_word(const loaded *l, uint32_t i) { return rd32(l->ctl + 4u * i); }

static const uint8_t *read_value(const mlk_record *r, uint32_t slot)
{
    for (uint32_t i = 0; i < r->n_reads; i++)
        if (r->slots[i] == slot)
            return r->values[i];
    return 0;
}

static int load_slot(mlk_ctx *c, uint32_t slot, const uint8_t *value, uint32_t max, const uint8_t **p,
                     uint32_t *len)
{
    return c->slot_data(c, slot, value, max, p, len);
}

/* Load and check the control words: [s, done, n_gen, P, N, prompt[P],
 * generated[N]] with P, N as an input may have them (mlk_parse_input),
 * s <= P + N - 1, done 0 or 1, n_gen <= N. */
static int load_control(mlk_ctx *c, const uint8_t *value, loaded *l)
{
    const uint32_t max = 4u * (MLK_CTL_WORDS + MLK_MAX_CTX + 1u);
    int rc = load_slot(c, MLK_SLOT_CONTROL, value, max, &l->ctl, &l->ctl_len);
    if (rc != MLK_OK)
        return rc;
    if (l->ctl_len < 4u * MLK_CTL_WORDS)
        return MLK_E_INPUT;
    uint32_t s = ctl_word(l, 0), done = ctl_word(l, 1), n_gen = ctl_word(l, 2);
    uint32_t p = ctl_word(l, 3), n = ctl_word(l, 4);
    if (p < 1 || n < 1 || n > c->max_cap || p > c->max_cap - n + 1)
        return MLK_E_INPUT;
    if (l->ctl_len != 4u * (MLK_CTL_WORDS + p + n) || s > p + n - 1 || done > 1 || n_gen > n)
        return MLK_E_INPUT;
    return MLK_OK;
}

/* The elements [lo, hi) of constant input k of node nd the execution uses
 * (ids: the node's id tensor, for an embedding table). */
static void const_range(const mlk_ctx *c, const mlk_node *nd, uint32_t k, uint32_t *lo, uint32_t *hi)
{
    const mlk_tensor *t = &c->t[nd->in[k]];
    const int32_t *a = nd->ia;
    *lo = 0, *hi = t->numel;
    if (k == 2 && ((nd->op == OP_LINEAR && a[1]) || (nd->op == OP_CONV2D && a[5]) ||
                   (nd->op == OP_CONV_TRANSPOSE2D && a[7]))) { /* a tile's bias */
        const int32_t *tile = nd->op == OP_LINEAR ? a : nd->op == OP_CONV2D ? a + 4 : a + 6;
        *lo = (uint32_t)tile[0], *hi = (uint32_t)(tile[0] + tile[1]);
        return;
    }
    if (k == 1 && nd->op == OP_LINEAR && a[1]) { /* w rows */
        *lo = (uint32_t)a[0] * t->shape[1], *hi = (uint32_t)(a[0] + a[1]) * t->shape[1];
        return;
    }
    if (k == 1 && nd->op == OP_CONV2D && a[5]) { /* w [OC, C, KH, KW]: output channels */
        const uint32_t per = t->numel / t->shape[0];
        *lo = (uint32_t)a[4] * per, *hi = (uint32_t)(a[4] + a[5]) * per;
        return;
    }
    if (k == 1 && nd->op == OP_CONV_TRANSPOSE2D && a[7]) { /* w [C, OC, KH, KW]: channels of every c */
        const uint32_t kk = t->shape[2] * t->shape[3];
        *lo = (uint32_t)a[6] * kk, *hi = ((t->shape[0] - 1u) * t->shape[1] + (uint32_t)(a[6] + a[7])) * kk;
        return;
    }
    if (nd->op == OP_EMBEDDING && k == 1) { /* the rows of the ids in range */
        const mlk_tensor *x = &c->t[nd->in[0]];
        const int32_t *ids = (const int32_t *)x->data;
        uint32_t vocab = t->shape[0], dim = t->shape[1], first = vocab, last = 0;
        for (uint32_t i = 0; i < x->numel; i++) {
            uint32_t id = (uint32_t)ids[i];
            if (id < vocab) {
                first = id < first ? id : first;
                last = id > last ? id : last;
            }
        }
        *lo = first < vocab ? first * dim : 0;
        *hi = first < vocab ? (last + 1u) * dim : 0;
    }
}

/* The constants of node nd: charged whole, loaded (the parts it uses) if
 * not in memory.  Input 0 first (an embedding's table range needs the ids). */
static int load_consts(mlk_ctx *c, const mlk_node *nd)
{
    for (uint32_t k = 0; k < nd->n_in; k++) {
        mlk_tensor *t = &c->t[nd->in[k]];
        uint32_t dup = 0, lo, hi;
        if (t->kind != MLK_KIND_CONST)
            continue;
        for (uint32_t i = 0; i < k; i++)
            dup |= nd->in[i] == nd->in[k];
        if (dup)
            continue;
        int rc = mlk_charge(c, t->numel * 4u);
        if (rc != MLK_OK)
            return rc;
        const_range(c, nd, k, &lo, &hi);
        for (uint32_t i = k + 1; i < nd->n_in; i++)
            if (nd->in[i] == nd->in[k])
                lo = 0, hi = t->numel; /* used twice: all of it */
        if (!t->data && (rc = c->const_data(c, t, lo, hi)) != MLK_OK)
            return rc;
    }
    return MLK_OK;
}

/* A graph output that is a constant (ADVANCE, OUTPUT): charged and loaded
 * whole; activations come from their slots. */
static int load_const_tensor(mlk_ctx *c, uint32_t tid)
{
    mlk_tensor *t = &c->t[tid];
    if (t->kind != MLK_KIND_CONST)
        return MLK_OK;
    int rc = mlk_charge(c, t->numel * 4u);
    if (rc == MLK_OK && !t->data)
        rc = c->const_data(c, t, 0, t->numel);
    return rc;
}

/* Tensor t from its slot (the record's value for that slot). */
static int load_tensor(mlk_ctx *c, const mlk_record *r, uint32_t tid)
{
    mlk_tensor *t = &c->t[tid];
    const uint32_t slot = MLK_SLOT_TENSOR0 + tid, size = t->numel * 4u;
    const uint8_t *p;
    uint32_t len;
    int rc = load_slot(c, slot, read_value(r, slot), size, &p, &len);
    if (rc != MLK_OK)
        return rc;
    if (len != size)
        return MLK_E_INPUT;
    t->data = native_words(c, p, t->numel);
    return t->data ? MLK_OK : MLK_E_NOMEM;
}

static int alloc_out(mlk_ctx *c, mlk_tensor *t)
{
    t->data = mlk_alloc(c, t->numel * 4u);
    return t->data ? MLK_OK : MLK_E_NOMEM;
}

/* KV_APPEND: the cache of s positions ++ this step's k and v (row 0 of the
 * qkv tensor), as [2, s+1, C]. */
static int kv_append(mlk_ctx *c, const mlk_node *nd, uint32_t s, const uint8_t *old, uint8_t **out,
                     uint32_t *out_len)
{
    const uint32_t ch = c->t[nd->out].shape[1], row = ch * 4u;
    const uint32_t *qkv = (const uint32_t *)c->t[nd->in[0]].data;
    if (s + 1u > MLK_MAX_ELEMENTS / 2u / ch)
        return MLK_E_NOMEM;
    uint32_t len = 2u * (s + 1u) * row;
    uint8_t *p = (uint8_t *)mlk_alloc(c, len);
    if (!p)
        return MLK_E_NOMEM;
    if (s) {
        mlk_memcpy(p, old, s * row);
        mlk_memcpy(p + (s + 1u) * row, old + s * row, s * row);
    }
    put_words(p + s * row, qkv + ch, ch, 1);
    put_words(p + (2u * s + 1u) * row, qkv + 2u * ch, ch, 1);
    *out = p;
    *out_len = len;
    return MLK_OK;
}

/* ATTEND at step s: query row 0 of qkv over the cache's s+1 positions. */
static int attend(mlk_ctx *c, mlk_node *nd, uint32_t s, const uint8_t *kv)
{
    const uint32_t ch = c->t[nd->out].shape[1], n = (s + 1u) * ch;
    float *k = (float *)native_words(c, kv, n), *v = (float *)native_words(c, kv + 4u * n, n);
    c->scratch = (float *)mlk_alloc(c, (s + 1u) * 4u);
    if (!k || !v || !c->scratch)
        return MLK_E_NOMEM;
    op_attention((const float *)c->t[nd->in[0]].data, (float *)c->t[nd->out].data, k, v, c->scratch, s, 1, ch,
                 (uint32_t)nd->ia[0]);
    return MLK_OK;
}

/* A plain-mode node (attention: with caches of its T rows, as mlk_run). */
static int run_plain_node(mlk_ctx *c, mlk_node *nd)
{
    if (nd->op == OP_RESHAPE) { /* the same elements under the output's shape */
        c->t[nd->out].data = c->t[nd->in[0]].data;
        return MLK_OK;
    }
    if (nd->op == OP_ATTENTION) {
        uint32_t cap = c->t[nd->in[0]].shape[0], ch = c->t[nd->out].shape[1];
        nd->kcache = (float *)mlk_alloc(c, cap * ch * 4u);
        nd->vcache = (float *)mlk_alloc(c, cap * ch * 4u);
        c->scratch = (float *)mlk_alloc(c, cap * 4u);
        if (!nd->kcache || !nd->vcache || !c->scratch)
            return MLK_E_NOMEM;
        nd->cache_len = 0;
        c->cap = cap;
    }
    return mlk_run_node(c, nd);
}

/* CONTROL_INIT: [0, 0, 0, P, N, prompt, N zeros] from the input payload. */
static int control_init(mlk_ctx *c, const loaded *l, uint8_t **out, uint32_t *out_len)
{
    mlk_rec recs[2];
    uint32_t p, n;
    int rc = mlk_parse_input(c, l->input, l->input_len, recs, &p, &n);
    if (rc != MLK_OK)
        return rc;
    uint32_t len = 4u * (MLK_CTL_WORDS + p + n);
    uint8_t *w = (uint8_t *)mlk_alloc(c, len);
    if (!w)
        return MLK_E_NOMEM;
    for (uint32_t i = 0; i < len; i++)
        w[i] = 0;
    wr32(w + 12, p);
    wr32(w + 16, n);
    mlk_memcpy(w + 4u * MLK_CTL_WORDS, recs[0].data, 4u * p);
    *out = w;
    *out_len = len;
    return MLK_OK;
}

/* ADVANCE: full steps append the output token, done on gen_eos or the N-th
 * token; every step s += 1. */
static int advance(mlk_ctx *c, const loaded *l, int full, uint8_t **out, uint32_t *out_len)
{
    uint8_t *w = (uint8_t *)mlk_alloc(c, l->ctl_len);
    if (!w)
        return MLK_E_NOMEM;
    mlk_memcpy(w, l->ctl, l->ctl_len);
    uint32_t n_gen = rd32(w + 8), p = rd32(w + 12), n = rd32(w + 16);
    if (full) {
        int32_t tok = *(const int32_t *)c->t[c->outputs[0]].data;
        wr32(w + 4u * (MLK_CTL_WORDS + p + n_gen), (uint32_t)tok);
        n_gen++;
        wr32(w + 8, n_gen);
        if ((c->gen_eos >= 0 && tok == c->gen_eos) || n_gen == n)
            wr32(w + 4, 1);
    }
    wr32(w, rd32(w) + 1u);
    *out = w;
    *out_len = l->ctl_len;
    return MLK_OK;
}

/* The generated tokens' output payload. */
static int gen_output(mlk_ctx *c, const loaded *l, uint8_t **out, uint32_t *out_len)
{
    uint32_t n_gen = ctl_word(l, 2), p = ctl_word(l, 3);
    int32_t *tok = (int32_t *)native_words(c, l->ctl + 4u * (MLK_CTL_WORDS + p), n_gen);
    return tok ? mlk_tokens_payload(c, tok, n_gen, out, out_len) : MLK_E_NOMEM;
}

/* Check a lazily loaded model's constant embedding ids (mlk_load checks them
 * when the constants are in memory). */
int mlk_check_const_ids(mlk_ctx *c)
{
    for (uint32_t j = 0; j < c->n_nodes; j++) {
        const mlk_node *nd = &c->nodes[j];
        mlk_tensor *x = &c->t[nd->in[0]];
        if (nd->op != OP_EMBEDDING || x->kind != MLK_KIND_CONST)
            continue;
        int rc = x->data ? MLK_OK : c->const_data(c, x, 0, x->numel);
        if (rc != MLK_OK)
            return rc;
        for (uint32_t i = 0; i < x->numel; i++)
            if ((uint32_t)((const int32_t *)x->data)[i] >= c->t[nd->in[1]].shape[0])
                return MLK_E_MODEL;
    }
    return MLK_OK;
}

/*
 * Execution r->exec of the schedule on a loaded model: MLK_MISMATCH if the
 * record's slots are not the schedule's (out_slot, or the slots read), else
 * the new value of the slot in value[32] (MLK_OK) and the slot's bytes in
 * *bytes (the output payload for OUTPUT; 0 for a no-op, whose value is the
 * old one), or an error code: MLK_E_INPUT for slot bytes that are not what
 * the schedule says (a length, a malformed control) and for the errors of a
 * run (a malformed input payload, an embedding id out of range), MLK_E_NOMEM.
 */
int mlk_exec(mlk_ctx *c, const mlk_record *r, uint8_t value[32], const uint8_t **bytes, uint32_t *n_bytes)
{
    const int gen = c->mode == MLK_MODE_GENERATE;
    loaded l = {0, 0, 0, 0, 0};
    mlk_entry e;
    uint32_t p = 0, n = 0;
    uint8_t *out = 0;
    uint32_t out_len = 0;
    int rc;

    *bytes = 0;
    *n_bytes = 0;
    for (uint32_t i = 0; i < c->n_tensors; i++)
        if (c->t[i].kind == MLK_KIND_ACT)
            c->t[i].data = 0;

    /* -- the schedule entry (generate mode: P and N from the control) */
    if (gen && r->exec >= 2) {
        const uint8_t *v = read_value(r, MLK_SLOT_CONTROL);
        if (!v)
            return MLK_MISMATCH;
        if ((rc = load_control(c, v, &l)) != MLK_OK)
            return rc;
        p = ctl_word(&l, 3), n = ctl_word(&l, 4);
    }
    mlk_sched_entry(c, p, n, r->exec, &e);
    if (r->out_slot != e.out_slot || r->n_reads != e.n_reads)
        return MLK_MISMATCH;
    for (uint32_t i = 0; i < e.n_reads; i++)
        if (r->slots[i] != e.reads[i])
            return MLK_MISMATCH;

    /* -- no-ops: past the end, and in generate mode everything but OUTPUT
     * once done is set */
    if (e.kind == MLK_X_NOOP || (gen && r->exec >= 2 && e.kind != MLK_X_OUTPUT && ctl_word(&l, 1))) {
        mlk_memcpy(value, r->old_value, 32);
        return MLK_OK;
    }
    if (gen && e.kind != MLK_X_CONTROL_INIT && e.kind != MLK_X_OUTPUT) {
        uint32_t s = ctl_word(&l, 0), n_gen = ctl_word(&l, 2);
        if (s != e.step || n_gen != (s >= p ? s - p + 1u : 0u))
            return MLK_E_INPUT; /* a control inconsistent with the schedule */
    }

    /* -- the other slots read */
    for (uint32_t i = 0; i < e.n_reads; i++) {
        uint32_t slot = e.reads[i];
        if (slot == MLK_SLOT_CONTROL)
            continue;
        if (slot == MLK_SLOT_INPUT) {
            rc = load_slot(c, slot, r->values[i], MLK_MAX_INPUT_BYTES, &l.input, &l.input_len);
        } else if (slot < MLK_SLOT_TENSOR0 + c->n_tensors) {
            rc = load_tensor(c, r, slot - MLK_SLOT_TENSOR0);
        } else { /* the KV cache: s positions before KV_APPEND, s + 1 before ATTEND */
            const uint32_t ch = c->t[c->nodes[e.arg].out].shape[1];
            const uint32_t pos = e.step + (e.kind == MLK_X_ATTEND);
            uint32_t len;
            if (pos == 0)
                continue;
            if (pos > MLK_MAX_ELEMENTS / 2u / ch)
                return MLK_E_INPUT;
            rc = load_slot(c, slot, r->values[i], 2u * pos * ch * 4u, &l.kv, &len);
            if (rc == MLK_OK && len != 2u * pos * ch * 4u)
                rc = MLK_E_INPUT;
        }
        if (rc != MLK_OK)
            return rc;
    }

    /* -- run it */
    mlk_tensor *o = 0;
    switch (e.kind) {
    case MLK_X_INPUT: {
        mlk_rec recs[MLK_MAX_IO];
        if ((rc = mlk_parse_input(c, l.input, l.input_len, recs, &p, &n)) != MLK_OK)
            return rc;
        o = &c->t[c->inputs[e.arg]];
        if ((rc = alloc_out(c, o)) != MLK_OK)
            return rc;
        for (uint32_t i = 0; i < o->numel; i++)
            ((uint32_t *)o->data)[i] = rd32(recs[e.arg].data + 4u * i);
        break;
    }
    case MLK_X_NODE:
    case MLK_X_ATTEND: {
        mlk_node *nd = &c->nodes[e.arg];
        o = &c->t[nd->out];
        if ((rc = load_consts(c, nd)) != MLK_OK)
            return rc;
        if (nd->op != OP_RESHAPE && (rc = alloc_out(c, o)) != MLK_OK)
            return rc;
        rc = e.kind == MLK_X_ATTEND ? attend(c, nd, e.step, l.kv) : run_plain_node(c, nd);
        if (rc != MLK_OK)
            return rc;
        break;
    }
    case MLK_X_KV_APPEND:
        if ((rc = kv_append(c, &c->nodes[e.arg], e.step, l.kv, &out, &out_len)) != MLK_OK)
            return rc;
        break;
    case MLK_X_FEED_TOKEN:
    case MLK_X_FEED_POS: {
        uint32_t s = e.step, v = s;
        if (e.kind == MLK_X_FEED_TOKEN)
            v = ctl_word(&l, MLK_CTL_WORDS + s); /* prompt[s], or generated[s - P] right after it */
        o = &c->t[c->inputs[e.kind == MLK_X_FEED_POS]];
        if ((rc = alloc_out(c, o)) != MLK_OK)
            return rc;
        ((uint32_t *)o->data)[0] = v;
        break;
    }
    case MLK_X_ADVANCE:
        if (e.step + 1u >= p && (rc = load_const_tensor(c, c->outputs[0])) != MLK_OK)
            return rc;
        if ((rc = advance(c, &l, e.step + 1u >= p, &out, &out_len)) != MLK_OK)
            return rc;
        break;
    case MLK_X_CONTROL_INIT:
        if ((rc = control_init(c, &l, &out, &out_len)) != MLK_OK)
            return rc;
        break;
    case MLK_X_OUTPUT:
        if (gen) {
            rc = gen_output(c, &l, &out, &out_len);
        } else {
            rc = MLK_OK;
            for (uint32_t i = 0; i < c->n_outputs && rc == MLK_OK; i++) {
                uint32_t dup = 0;
                for (uint32_t k = 0; k < i; k++)
                    dup |= c->outputs[k] == c->outputs[i];
                if (!dup)
                    rc = load_const_tensor(c, c->outputs[i]);
            }
            if (rc == MLK_OK)
                rc = mlk_output_payload(c, &out, &out_len);
        }
        if (rc != MLK_OK)
            return rc;
        mlk_keccak256(out, out_len, value);
        *bytes = out;
        *n_bytes = out_len;
        return MLK_OK;
    default:
        return MLK_E_MODEL;
    }
    if (o) { /* a tensor slot */
        out = (uint8_t *)(uintptr_t)tensor_bytes(c, o);
        out_len = o->numel * 4u;
        if (!out)
            return MLK_E_NOMEM;
    }
    if ((rc = mlk_blob_id(c, out, out_len, value)) != MLK_OK)
        return rc;
    *bytes = out;
    *n_bytes = out_len;
    return MLK_OK;
}
