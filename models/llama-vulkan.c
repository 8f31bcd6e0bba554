/* The Vulkan forward pass of llama/qwen2: weights of each precision variant in device-local
 * buffers, a KV cache per sequence, and one recording per step shape that is re-submitted with
 * the position in a host-visible parameter buffer. */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ggml-types.h"
#include "llama-vulkan-capture.h"
#include "llama-vulkan-internal.h"
#include "macro.h"

#define UBATCH 512u

static const char *const stamp_names[] = {
        "start", "get_rows", "rmsnorm", "qkv matmul", "rope+kv store", "attention", "wo matmul",
        "add+rmsnorm", "gate/up matmul", "silu*up", "down matmul", "add+rmsnorm", "other layers",
        "output matmul", "argmax",
};

static int stamp(QvkCmd *c, LlamaVkSeq *s, uint32_t l) {
        if (!s->profile || l > 0 || s->n_stamps >= ELEMENTSOF(stamp_names))
                return 0;
        return qvk_cmd_timestamp(c, s->n_stamps++);
}

void llama_vk_seq_set_profile(LlamaVkSeq *s, bool on) {
        s->profile = on;
        s->gen_dec[0] = s->gen_dec[1] = s->gen_prefill = UINT64_MAX; /* re-record */
}

int llama_vk_seq_profile(LlamaVkSeq *s, bool decode, const char *const **ret_names, double *ret_ns) {
        QvkCmd *c = decode ? s->cmd_dec[s->last] : s->cmd_prefill;
        int r;

        if (!s->profile || !c || s->n_stamps < 2)
                return -ENODATA;
        r = qvk_cmd_timestamps_read(c, 0, ELEMENTSOF(stamp_names), ret_ns);
        if (r < 0)
                return r;
        *ret_names = stamp_names;
        return ELEMENTSOF(stamp_names);
}

int llama_vk_seq_stats(LlamaVkSeq *s, bool decode, uint32_t *ret_dispatches, uint32_t *ret_barriers) {
        uint32_t p = s->gen_dec[0] == UINT64_MAX; /* both parities record the same step */
        QvkCmd *c = decode ? s->cmd_dec[p] : s->cmd_prefill;

        if (!c || (decode ? s->gen_dec[p] : s->gen_prefill) == UINT64_MAX)
                return -ENODATA;
        qvk_cmd_stats(c, ret_dispatches, ret_barriers);
        return 0;
}

void llama_vk_set_fusion(LlamaVk *v, unsigned which) {
        which &= LLAMA_VK_FUSE_ALL | LLAMA_VK_FUSE_BLK;
        pthread_mutex_lock(&v->lock);
        if (v->fusion != which)
                v->generation++;  /* every sequence re-records */
        v->fusion = which;
        pthread_mutex_unlock(&v->lock);
}

static uint32_t ggml_of(QvkWeightType wt) {
        switch (qvk_weight_base(wt)) {
        case QVK_W_F32:
                return GGML_TYPE_F32;
        case QVK_W_F16:
                return GGML_TYPE_F16;
        case QVK_W_Q8_0:
                return GGML_TYPE_Q8_0;
        case QVK_W_Q4_0:
                return GGML_TYPE_Q4_0;
        case QVK_W_Q4_K:
                return GGML_TYPE_Q4_K;
        case QVK_W_Q6_K:
                return GGML_TYPE_Q6_K;
        case QVK_W_Q5_0:
                return GGML_TYPE_Q5_0;
        case QVK_W_Q5_K:
                return GGML_TYPE_Q5_K;
        case QVK_W_Q5_1:
                return GGML_TYPE_Q5_1;
        default:
                return GGML_TYPE_Q4_1;
        }
}

/* The device format of a weight for a variant: sources already in a block format no wider
 * than the variant's are used as they are; everything else is (re)quantized. Q4_K, Q5_K, Q6_K,
 * Q5_0 and Q5_1 stay as stored in every variant, and in a file already quantized to 4 bits (keep8:
 * a K-quant mix such as Q4_K_M or Q5_K_M, or a Q4_0 / Q4_1 file) so does Q8_0, which its quantizer chose
 * (llama.cpp's output.weight): its int4 variant is the file's own mix (docs/QUANTIZATION.md). */
static QvkWeightType target_type(const LlamaTensor *t, QdPrecision p, bool keep8) {
        if (t->ne0 % 32 != 0)
                return QVK_W_F16;
        switch (t->type) {
        case GGML_TYPE_Q4_K:
                return QVK_W_Q4_K;
        case GGML_TYPE_Q6_K:
                return QVK_W_Q6_K;
        case GGML_TYPE_Q5_0:
                return QVK_W_Q5_0;
        case GGML_TYPE_Q5_K:
                return QVK_W_Q5_K;
        case GGML_TYPE_Q5_1:
                return QVK_W_Q5_1;
        case GGML_TYPE_Q8_0:
                return p == QD_PRECISION_INT4 && !keep8 ? QVK_W_Q4_0 : QVK_W_Q8_0;
        case GGML_TYPE_Q4_0:
                return QVK_W_Q4_0;
        case GGML_TYPE_Q4_1:
                return QVK_W_Q4_1;
        default:
                return p == QD_PRECISION_F16 ? QVK_W_F16 : p == QD_PRECISION_INT8 ? QVK_W_Q8_0 : QVK_W_Q4_0;
        }
}

/* Formats qvk_matmul_blocks() reads. */
static bool rows_type(QvkWeightType wt) {
        return wt == QVK_W_Q4_K || wt == QVK_W_Q5_K || wt == QVK_W_Q6_K || wt == QVK_W_Q5_0 ||
               wt == QVK_W_Q5_1 || wt == QVK_W_Q8_0 || wt == QVK_W_Q4_0 || wt == QVK_W_Q4_1;
}

/* One device matrix of the rows of n (<= 3) tensors with the same row length, in the first
 * one's device format; where they are block formats of different kinds (Q/K/V of a Q4_K_M
 * file: Q4_K and Q6_K), in row blocks of their own formats instead (each run of one format a
 * block at an aligned offset) so that none is converted. */
static VkTensor plan(const LlamaTensor *const *t, size_t n, QdPrecision p, const LlamaWeights *w, uint64_t *off) {
        bool mix = w->kquant_mix, keep8 = mix || w->file_type == GGML_TYPE_Q4_0 || w->file_type == GGML_TYPE_Q4_1;
        QvkWeightType wts[3];
        bool mixed = false, kq = true;

        assert(n <= ELEMENTSOF(wts));
        for (size_t i = 0; i < n; i++) {
                wts[i] = target_type(t[i], p, keep8);
                mixed |= wts[i] != wts[0];
                kq &= rows_type(wts[i]);
        }
        VkTensor r = {
                .wt = wts[0],
                .k = t[0]->ne0,
        };
        for (size_t i = 0; i < n; i++)
                r.m += t[i]->ne1;
        r.bytes = qvk_weight_row_bytes(r.wt, r.k) * r.m;
        if (mixed && kq) {
                uint64_t b = 0;
                for (size_t i = 0; i < n; i++) {
                        QvkWeightType wt = wts[i];
                        if (r.n_seg == 0 || r.seg[r.n_seg - 1].wt != wt) {
                                b = ALIGN_TO(b, ALIGN);
                                r.seg[r.n_seg++] = (typeof(r.seg[0])) { .wt = wt, .off = b };
                        }
                        r.seg[r.n_seg - 1].m += t[i]->ne1;
                        r.seg[r.n_seg - 1].n_t++;
                        b += qvk_weight_row_bytes(wt, r.k) * t[i]->ne1;
                }
                r.bytes = b;
        } else if (mix && r.wt == QVK_W_Q8_0) {
                /* Q8_0 stands in for Q6_K in a K-quant mix: on the same fp32-activation kernels
                 * as the K-quants (the int-dot kernel's int8 activations moved the bundled
                 * model's greedy tokens off the CPU reference's). */
                r.n_seg = 1;
                r.seg[0] = (typeof(r.seg[0])) { .wt = r.wt, .m = r.m, .n_t = (uint32_t) n };
        }
        if (r.n_seg == 0) {  /* block formats in the layout the kernels read fastest (vk-repack.c) */
                r.wt = qvk_weight_repack_type(r.wt);
                r.bytes = qvk_weight_row_bytes(r.wt, r.k) * r.m;
        }
        r.off = *off;
        *off += ALIGN_TO(r.bytes, ALIGN);
        return r;
}

/* Converted host copies, reused when several tensors share their source (the benchmark). */
typedef struct Memo {
        const void *src;
        QvkWeightType wt;
        void *data;
} Memo;

static void memo_free(Memo *memo, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(memo[i].data);
}

static int convert(const LlamaTensor *t, const VkTensor *vt, Memo *memo, size_t n_memo,
                   const void **ret) {
        Memo *slot = &memo[0];
        _cleanup_free_ float *row = NULL;
        uint8_t *out;

        if (t->type == ggml_of(vt->wt)) {
                *ret = t->data;
                return 0;
        }
        for (size_t i = 0; i < n_memo; i++) {
                if (memo[i].src == t->data && memo[i].wt == vt->wt) {
                        *ret = memo[i].data;
                        return 0;
                }
                if (!memo[i].src) {
                        slot = &memo[i];
                        break;
                }
        }
        row = malloc(t->ne0 * sizeof(float));
        out = malloc(vt->bytes);
        if (!row || !out) {
                free(out);
                return -ENOMEM;
        }
        uint64_t rb = vt->bytes / vt->m;
        for (uint64_t r = 0; r < t->ne1; r++) {
                int q = llama_tensor_row(t, r, row);
                if (q >= 0)
                        q = ggml_quantize_row(ggml_of(vt->wt), row, out + r * rb, t->ne0);
                if (q < 0) {
                        free(out);
                        return q;
                }
        }
        free(slot->data);
        *slot = (Memo) { .src = t->data, .wt = vt->wt, .data = out };
        *ret = out;
        return 0;
}

static void variant_free(LlamaVk *v, Variant *var) {
        for (uint32_t l = 0; var->layers && l < v->w->hp.n_layer; l++) {
                VkLayerW *L = &var->layers[l];
                qvk_split_free(&L->qkv.own);
                qvk_split_free(&L->wo.own);
                qvk_split_free(&L->gu.own);
                qvk_split_free(&L->down.own);
        }
        qvk_split_free(&var->output.own);
        if (var->bufs)
                for (uint32_t l = 0; l <= v->w->hp.n_layer; l++)
                        qvk_buffer_free(var->bufs[l]);
        free(var->bufs);
        free(var->layers);
        *var = (Variant) {};
}

static void variant_plan(LlamaVk *v, QdPrecision p, Variant *var, uint64_t *layer_bytes,
                         uint64_t *out_bytes) {
        const LlamaWeights *w = v->w;

        var->bytes = 0;
        for (uint32_t l = 0; l < w->hp.n_layer; l++) {
                const LlamaLayer *L = &w->layers[l];
                VkLayerW *o = &var->layers[l];
                uint64_t off = 0;
                const LlamaTensor *qkv[] = { &L->wq, &L->wk, &L->wv }, *gu[] = { &L->gate, &L->up };
                const LlamaTensor *wo = &L->wo, *down = &L->down;
                o->qkv = plan(qkv, 3, p, w, &off);
                o->wo = plan(&wo, 1, p, w, &off);
                o->gu = plan(gu, 2, p, w, &off);
                o->down = plan(&down, 1, p, w, &off);
                layer_bytes[l] = off;
                var->bytes += off;
        }
        uint64_t off = 0;
        const LlamaTensor *out = &w->output;
        var->output = plan(&out, 1, p, w, &off);
        *out_bytes = off;
        var->bytes += off;
}

uint64_t llama_vk_variant_bytes(LlamaVk *v, QdPrecision p) {
        Variant var = {};
        uint64_t out, bytes;
        _cleanup_free_ uint64_t *lb = NULL;

        if (p < 0 || p >= _QD_PRECISION_MAX)
                return 0;
        pthread_mutex_lock(&v->lock);
        bytes = v->var[p].bufs ? v->var[p].bytes : 0;
        pthread_mutex_unlock(&v->lock);
        if (bytes > 0)
                return bytes;
        var.layers = calloc(v->w->hp.n_layer, sizeof(VkLayerW));
        lb = calloc(v->w->hp.n_layer, sizeof(uint64_t));
        if (!var.layers || !lb) {
                free(var.layers);
                return UINT64_MAX;
        }
        variant_plan(v, p, &var, lb, &out);
        bytes = var.bytes;
        free(var.layers);
        return bytes;
}

/* Uploads rows of rb bytes from data at byte offset off of vt (its own allocations, which hold
 * one format, or buf). */
static int upload_rows(VkTensor *vt, QvkBuffer *buf, uint64_t off, uint64_t rb, const void *data, uint64_t rows) {
        if (vt->own.n_parts)
                return qvk_split_upload(&vt->own, (off - vt->off) / rb, data, rows);
        return qvk_buffer_upload(buf, off, data, rows * rb);
}

/* Uploads the tensors' rows one after the other into the fused matrix vt (into its own
 * allocations where it has them, else at vt->off in buf); a repacked format is repacked from
 * the GGUF rows on the way, through a host buffer of one staging chunk (64 MiB, vk-buffer.c). */
static int upload(const LlamaTensor *const *t, size_t n, VkTensor *vt, QvkBuffer *buf, Memo *memo,
                  size_t n_memo) {
        QvkWeightType wt = vt->wt, base = qvk_weight_base(wt);
        uint64_t off = vt->off, rb = qvk_weight_row_bytes(wt, vt->k), gb = qvk_weight_row_bytes(base, vt->k);
        uint64_t chunk = MAX((uint64_t) (64u << 20) / rb, (uint64_t) 1);  /* one staging chunk a call */
        _cleanup_free_ uint8_t *packed = NULL;

        /* Row blocks of several formats (n_seg > 0) are never repacked. */
        if (base != wt && !(packed = malloc(MIN(chunk, (uint64_t) vt->m) * rb)))
                return -ENOMEM;
        for (size_t i = 0, s = 0, first = 0; i < n; i++) {
                if (vt->n_seg > 0 && i == first) {  /* the next row block */
                        wt = base = vt->seg[s].wt;
                        rb = gb = qvk_weight_row_bytes(wt, vt->k);
                        off = vt->off + vt->seg[s].off;
                        first += vt->seg[s++].n_t;
                }
                VkTensor part = { .wt = base, .k = vt->k, .m = t[i]->ne1, .off = off, .bytes = gb * t[i]->ne1 };
                const void *data;
                int r = convert(t[i], &part, memo, n_memo, &data);
                if (r < 0)
                        return r;
                for (uint64_t r0 = 0; r0 < t[i]->ne1 && r >= 0; r0 += packed ? chunk : t[i]->ne1) {
                        uint64_t rows = packed ? MIN(chunk, t[i]->ne1 - r0) : t[i]->ne1;
                        const uint8_t *src = (const uint8_t *) data + r0 * gb;
                        if (packed && (r = qvk_weight_repack(wt, vt->k, src, rows, packed)) < 0)
                                break;
                        r = upload_rows(vt, buf, off + r0 * rb, rb, packed ? packed : src, rows);
                }
                if (r < 0)
                        return r;
                off += rb * t[i]->ne1;
        }
        return 0;
}

/* A tensor in allocations of its own, split by rows where it exceeds maxMemoryAllocationSize
 * (in one format: row blocks of K-quant mixes are converted to the first one's). */
static int own_alloc(LlamaVk *v, VkTensor *t) {
        t->off = 0;
        t->n_seg = 0;
        t->bytes = qvk_weight_row_bytes(t->wt, t->k) * t->m;
        return qvk_split_new(v->d, t->m, qvk_weight_row_bytes(t->wt, t->k), QVK_MEM_DEVICE, &t->own);
}

/* Builds the variant for p into *ret, not yet visible to the stepping thread. */
static int variant_build(LlamaVk *v, QdPrecision p, Variant *ret) {
        const LlamaWeights *w = v->w;
        uint32_t nl = w->hp.n_layer;
        Variant var = {};
        Memo memo[8] = {};
        _cleanup_free_ uint64_t *lb = NULL;
        uint64_t out_bytes, max_alloc = qvk_device_features(v->d)->max_allocation_size / 16 * 16;
        int r = -ENOMEM;

        var.layers = calloc(nl, sizeof(VkLayerW));
        var.bufs = calloc(nl + 1, sizeof(QvkBuffer *));
        lb = calloc(nl, sizeof(uint64_t));
        if (!var.layers || !var.bufs || !lb)
                goto fail;
        variant_plan(v, p, &var, lb, &out_bytes);
        for (uint32_t l = 0; l < nl; l++) {
                const LlamaLayer *L = &w->layers[l];
                VkLayerW *o = &var.layers[l];
                if (lb[l] <= max_alloc)
                        r = qvk_buffer_new(v->d, lb[l], QVK_MEM_DEVICE, &var.bufs[l]);
                else if ((r = own_alloc(v, &o->qkv)) >= 0 && (r = own_alloc(v, &o->wo)) >= 0 &&
                         (r = own_alloc(v, &o->gu)) >= 0)
                        r = own_alloc(v, &o->down);
                if (r < 0)
                        goto fail;
                const LlamaTensor *qkv[] = { &L->wq, &L->wk, &L->wv }, *gu[] = { &L->gate, &L->up };
                const LlamaTensor *wo = &L->wo, *down = &L->down;
                if ((r = upload(qkv, 3, &o->qkv, var.bufs[l], memo, ELEMENTSOF(memo))) < 0 ||
                    (r = upload(&wo, 1, &o->wo, var.bufs[l], memo, ELEMENTSOF(memo))) < 0 ||
                    (r = upload(gu, 2, &o->gu, var.bufs[l], memo, ELEMENTSOF(memo))) < 0 ||
                    (r = upload(&down, 1, &o->down, var.bufs[l], memo, ELEMENTSOF(memo))) < 0)
                        goto fail;
        }
        if (out_bytes <= max_alloc)
                r = qvk_buffer_new(v->d, out_bytes, QVK_MEM_DEVICE, &var.bufs[nl]);
        else
                r = own_alloc(v, &var.output);
        if (r < 0)
                goto fail;
        const LlamaTensor *out = &w->output;
        r = upload(&out, 1, &var.output, var.bufs[nl], memo, ELEMENTSOF(memo));
        if (r < 0)
                goto fail;
        memo_free(memo, ELEMENTSOF(memo));
        *ret = var;
        return 0;
fail:
        memo_free(memo, ELEMENTSOF(memo));
        variant_free(v, &var);
        return r;
}

bool llama_vk_has_variant(LlamaVk *v, QdPrecision p) {
        bool b;

        if (p < 0 || p >= _QD_PRECISION_MAX)
                return false;
        pthread_mutex_lock(&v->lock);
        b = !!v->var[p].bufs;
        pthread_mutex_unlock(&v->lock);
        return b;
}

int llama_vk_prepare(LlamaVk *v, QdPrecision p) {
        Variant var = {};
        int r;

        if (p < 0 || p >= _QD_PRECISION_MAX)
                return -EINVAL;
        if (llama_vk_has_variant(v, p))
                return 0;
        /* Quantization and uploads run without the lock: the uploads take the device's queue
         * lock per chunk, so a step on another thread only waits for one chunk's copy. */
        r = variant_build(v, p, &var);
        if (r < 0)
                return r;
        pthread_mutex_lock(&v->lock);
        if (!v->var[p].bufs) {
                v->var[p] = var; /* published whole */
                var = (Variant) {};
        }
        pthread_mutex_unlock(&v->lock);
        variant_free(v, &var); /* built twice concurrently: keep the first */
        return 0;
}

int llama_vk_set_precision(LlamaVk *v, QdPrecision p) {
        int r;

        r = llama_vk_prepare(v, p);
        if (r < 0)
                return r;
        pthread_mutex_lock(&v->lock);
        if (v->cur != p)
                v->generation++;
        v->cur = p;
        pthread_mutex_unlock(&v->lock);
        return 0;
}

QdPrecision llama_vk_get_precision(LlamaVk *v) {
        return v->cur;
}

int llama_vk_drop_variants(LlamaVk *v, bool keep_current_only) {
        Variant drop[_QD_PRECISION_MAX] = {};

        if (!keep_current_only)
                return 0;
        /* a decode step queued ahead (run-ahead) may still read the variant it was recorded with */
        int r = qvk_device_wait_idle(v->d);
        if (r < 0)
                return r;
        pthread_mutex_lock(&v->lock);
        for (int p = 0; p < _QD_PRECISION_MAX; p++)
                if (p != (int) v->cur) {
                        drop[p] = v->var[p];
                        v->var[p] = (Variant) {};
                }
        pthread_mutex_unlock(&v->lock);
        for (int p = 0; p < _QD_PRECISION_MAX; p++)
                variant_free(v, &drop[p]);
        return 0;
}

uint64_t llama_vk_device_bytes(LlamaVk *v) {
        uint64_t b = v->table_bytes + v->common_bytes;

        pthread_mutex_lock(&v->lock);
        for (int p = 0; p < _QD_PRECISION_MAX; p++)
                if (v->var[p].bufs)
                        b += v->var[p].bytes;
        pthread_mutex_unlock(&v->lock);
        return b;
}

LlamaVk *llama_vk_free(LlamaVk *v) {
        if (!v)
                return NULL;
        (void) qvk_device_wait_idle(v->d); /* steps queued ahead of sequences not yet freed */
        llama_vk_batch_done(&v->batch);
        qvk_cmd_free(v->batch.cmd);
        for (int p = 0; p < _QD_PRECISION_MAX; p++)
                variant_free(v, &v->var[p]);
        qvk_split_free(&v->table);
        qvk_buffer_free(v->common);
        free(v->off_attn_norm);
        free(v->off_ffn_norm);
        free(v->off_bias);
        pthread_mutex_destroy(&v->lock);
        return mfree(v);
}

static int upload_vector(LlamaVk *v, const LlamaTensor *t, uint64_t n, uint64_t off) {
        _cleanup_free_ float *f = malloc(n * sizeof(float));
        int r;

        if (!f)
                return -ENOMEM;
        r = llama_tensor_vector(t, f, n);
        if (r < 0)
                return r;
        return qvk_buffer_upload(v->common, off, f, n * sizeof(float));
}

static int upload_table(LlamaVk *v) {
        const LlamaTensor *t = &v->w->token_embd;
        uint32_t E = t->ne0;
        size_t es = v->kv_f16 ? 2 : 4;
        uint64_t rows_per_chunk = MAX(1u, (16u << 20) / (E * es));
        _cleanup_free_ float *row = malloc(E * sizeof(float));
        _cleanup_free_ uint8_t *chunk = malloc(rows_per_chunk * E * es);
        int r;

        if (!row || !chunk)
                return -ENOMEM;
        for (uint64_t r0 = 0; r0 < t->ne1; r0 += rows_per_chunk) {
                uint64_t n = MIN(rows_per_chunk, t->ne1 - r0);
                for (uint64_t i = 0; i < n; i++) {
                        r = llama_tensor_row(t, r0 + i, row);
                        if (r < 0)
                                return r;
                        if (v->kv_f16) {
                                uint16_t *h = (uint16_t *) chunk + i * E;
                                for (uint32_t j = 0; j < E; j++)
                                        h[j] = qd_fp32_to_fp16(row[j]);
                        } else
                                memcpy((float *) chunk + i * E, row, E * sizeof(float));
                }
                r = qvk_split_upload(&v->table, r0, chunk, n);
                if (r < 0)
                        return r;
        }
        return 0;
}

int llama_vk_new(QvkDevice *d, const LlamaWeights *w, LlamaVk **ret) {
        _cleanup_(llama_vk_freep) LlamaVk *v = NULL;
        const LlamaHParams *hp = &w->hp;
        uint32_t E = hp->n_embd, nq = hp->n_head * hp->head_dim, nkv = hp->n_head_kv * hp->head_dim;
        uint64_t off = 0;
        int r;

        if (hp->head_dim > 256)
                return -EOPNOTSUPP;
        v = calloc(1, sizeof(*v));
        if (!v)
                return -ENOMEM;
        pthread_mutex_init(&v->lock, NULL);
        v->d = d;
        v->w = w;
        v->cur = QD_PRECISION_F16;
        /* $QUANTD_VK_KV_F32=1 forces the f32 KV cache and embedding table of devices without
         * 16-bit storage, so that the fallback is testable anywhere. */
        v->kv_f16 = qvk_device_features(d)->storage16 && !streq_ptr(getenv("QUANTD_VK_KV_F32"), "1");
        v->off_attn_norm = calloc(hp->n_layer, sizeof(uint64_t));
        v->off_ffn_norm = calloc(hp->n_layer, sizeof(uint64_t));
        v->off_bias = calloc(hp->n_layer, sizeof(uint64_t));
        if (!v->off_attn_norm || !v->off_ffn_norm || !v->off_bias)
                return -ENOMEM;

        for (uint32_t l = 0; l < hp->n_layer; l++) {
                v->off_attn_norm[l] = off;
                off += ALIGN_TO(E * 4, ALIGN);
                v->off_ffn_norm[l] = off;
                off += ALIGN_TO(E * 4, ALIGN);
                v->off_bias[l] = off;
                if (hp->qkv_bias)
                        off += ALIGN_TO((nq + 2 * nkv) * 4, ALIGN);
        }
        v->off_out_norm = off;
        off += ALIGN_TO(E * 4, ALIGN);
        v->off_freq = off;
        off += ALIGN_TO(hp->n_rot / 2 * 4, ALIGN);
        v->common_bytes = off;
        r = qvk_buffer_new(d, off, QVK_MEM_DEVICE, &v->common);
        if (r < 0)
                return r;
        for (uint32_t l = 0; l < hp->n_layer; l++) {
                const LlamaLayer *L = &w->layers[l];
                if ((r = upload_vector(v, &L->attn_norm, E, v->off_attn_norm[l])) < 0 ||
                    (r = upload_vector(v, &L->ffn_norm, E, v->off_ffn_norm[l])) < 0)
                        return r;
                if (hp->qkv_bias) {
                        _cleanup_free_ float *b = calloc(nq + 2 * nkv, sizeof(float));
                        if (!b)
                                return -ENOMEM;
                        if ((L->bq.data && (r = llama_tensor_vector(&L->bq, b, nq)) < 0) ||
                            (L->bk.data && (r = llama_tensor_vector(&L->bk, b + nq, nkv)) < 0) ||
                            (L->bv.data && (r = llama_tensor_vector(&L->bv, b + nq + nkv, nkv)) < 0))
                                return r;
                        r = qvk_buffer_upload(v->common, v->off_bias[l], b, (nq + 2 * nkv) * 4);
                        if (r < 0)
                                return r;
                }
        }
        r = upload_vector(v, &w->output_norm, E, v->off_out_norm);
        if (r < 0)
                return r;
        {
                float f[512];
                uint32_t half = hp->n_rot / 2;
                for (uint32_t i = 0; i < half; i++) {
                        f[i] = hp->rope_freq_scale * powf(hp->rope_base, -2.0f * (float) i / (float) hp->n_rot);
                        if (hp->rope_factors)
                                f[i] /= hp->rope_factors[i];
                }
                r = qvk_buffer_upload(v->common, v->off_freq, f, half * sizeof(float));
                if (r < 0)
                        return r;
        }

        v->table_bytes = (uint64_t) hp->n_vocab * E * (v->kv_f16 ? 2 : 4);
        r = qvk_split_new(d, hp->n_vocab, (uint64_t) E * (v->kv_f16 ? 2 : 4), QVK_MEM_DEVICE, &v->table);
        if (r < 0)
                return r;
        r = upload_table(v);
        if (r < 0)
                return r;

        const uint32_t wg64[] = { 64 }, wg256[] = { 256 };
        const char *kv = v->kv_f16 ? "f16" : "f32";
        char rope[32], rows[32];
        snprintf(rope, sizeof(rope), "rope_%s_kv%s", hp->neox ? "neox" : "norm", kv);
        snprintf(rows, sizeof(rows), "get_rows_%s", kv);
        if ((r = qvk_pipeline_get(d, rows, wg64, 1, 3, 12, &v->p_get_rows)) < 0 ||
            (r = qvk_pipeline_get(d, "rmsnorm_f32", NULL, 0, 3, 8, &v->p_norm)) < 0 ||
            (r = qvk_pipeline_get(d, "add_rmsnorm_f32", NULL, 0, 4, 8, &v->p_add_norm)) < 0 ||
            (r = qvk_pipeline_get(d, "silu_mul_f32", wg256, 1, 2, 8, &v->p_silu)) < 0 ||
            (r = qvk_pipeline_get(d, rope, wg64, 1, 7, 20, &v->p_rope)) < 0 ||
            (r = qvk_pipeline_get(d, "argmax_f32", NULL, 0, 3, 16, &v->p_argmax)) < 0)
                return r;
        /* Decode: the norms spread over n_embd / 512 workgroups (rmsnorm-wide.comp), and on the
         * int-dot path the ops before the matrix products write int8 blocks themselves (whole
         * blocks per head for the attention). $QUANTD_VK_NO_FUSE_Q8=1 turns the latter off (for
         * comparisons). */
        if (E % 32 == 0 && E <= 8192 &&
            ((r = qvk_pipeline_get(d, "rmsnorm_wide_f32", NULL, 0, 3, 8, &v->p_norm_wide)) < 0 ||
             (r = qvk_pipeline_get(d, "add_rmsnorm_wide_f32", NULL, 0, 5, 8, &v->p_add_norm_wide)) < 0))
                return r;
        {
                /* decode attention; _rope: with the rotation folded in (no rope dispatch) */
                char dec[64], decr[64];
                snprintf(dec, sizeof(dec), "attention_decode_kv%s", kv);
                snprintf(decr, sizeof(decr), "attention_decode_rope_%s_kv%s", hp->neox ? "neox" : "norm", kv);
                if ((r = qvk_pipeline_get(d, dec, &hp->head_dim, 1, 7, 32, &v->p_attn_dec)) < 0 ||
                    (r = qvk_pipeline_get(d, decr, &hp->head_dim, 1, 9, 32, &v->p_attn_dec_rope)) < 0)
                        return r;
        }
        /* The decode step's epilogues: by default the blk ones (qvk_matvec_blk: whole int8
         * blocks per workgroup, no counters) on GPUs, +4.5-7% tg128 on the H100, and none on CPU
         * devices (not measured faster on lavapipe); $QUANTD_VK_FUSION=blk, 0 (none), or the
         * counter epilogues (qvk_matvec_epi), which ran slower on the H100: 1 (all), glu (SiLU·up
         * only), norm (add + norm only) (docs/PERFORMANCE.md). */
        const char *fuse = getenv("QUANTD_VK_FUSION");
        bool cpu = streq(qvk_device_features(d)->type, "cpu");
        /* No decode step queued ahead (whatever the callers ask) where $QUANTD_VK_RUNAHEAD=0,
         * or on CPU devices unless it is 1: there the queued step competes with the host's own
         * threads and ran a few percent slower on lavapipe, against +3.5-7% on the H100. */
        const char *ra = getenv("QUANTD_VK_RUNAHEAD");
        v->no_runahead = streq_ptr(ra, "0") || (cpu && !streq_ptr(ra, "1"));
        v->fusion = streq_ptr(fuse, "1")      ? LLAMA_VK_FUSE_ALL
                    : streq_ptr(fuse, "glu")  ? LLAMA_VK_FUSE_GLU
                    : streq_ptr(fuse, "norm") ? LLAMA_VK_FUSE_NORM
                    : streq_ptr(fuse, "blk")  ? LLAMA_VK_FUSE_BLK
                    : streq_ptr(fuse, "0")    ? 0
                    : cpu                     ? 0
                                              : LLAMA_VK_FUSE_BLK;
        if (v->p_norm_wide && qvk_device_features(d)->int_dot && hp->n_ff % 32 == 0 &&
            !streq_ptr(getenv("QUANTD_VK_NO_FUSE_Q8"), "1")) {
                const uint32_t wg32[] = { 32 };
                if ((r = qvk_pipeline_get(d, "rmsnorm_wide_q8_f32", NULL, 0, 4, 8, &v->p_norm_q8)) < 0 ||
                    (r = qvk_pipeline_get(d, "add_rmsnorm_wide_q8_f32", NULL, 0, 6, 8, &v->p_add_norm_q8)) < 0 ||
                    (r = qvk_pipeline_get(d, "silu_mul_q8_f32", wg32, 1, 2, 8, &v->p_silu_q8)) < 0)
                        return r;
                if (hp->head_dim % 32 == 0) {
                        char decr[64];
                        snprintf(decr, sizeof(decr), "attention_decode_rope_%s_q8_kv%s", hp->neox ? "neox" : "norm", kv);
                        r = qvk_pipeline_get(d, decr, &hp->head_dim, 1, 10, 32, &v->p_attn_dec_rope_q8);
                        if (r < 0)
                                return r;
                }
        }

        *ret = TAKE_PTR(v);
        return 0;
}

/* The epilogues' counters (matvec-epi.glsl): GLU+Q8 one per block of 32 outputs; NORM one,
 * NORM+Q8 one per block and one more, then a float per block. */
static uint64_t cnt_glu_bytes(uint32_t F) {
        return (uint64_t) DIV_ROUND_UP(F, 32u) * 4;
}

static uint64_t cnt_norm_bytes(uint32_t E) {
        return (2 * (uint64_t) DIV_ROUND_UP(E, 32u) + 1) * 4;
}

LlamaVkSeq *llama_vk_seq_free(LlamaVkSeq *s) {
        if (!s)
                return NULL;
        /* first the recordings: freeing one waits for its last submission (a step queued
         * ahead included), before its buffers go */
        qvk_cmd_free(s->cmd_dec[0]);
        qvk_cmd_free(s->cmd_dec[1]);
        qvk_cmd_free(s->cmd_prefill);
        QvkBuffer **bufs[] = { &s->kc, &s->vc, &s->x, &s->x2, &s->xb, &s->qkv, &s->q, &s->att, &s->o,
                               &s->gu, &s->g, &s->xlast, &s->logits, &s->scratch, &s->tokens,
                               &s->params, &s->result, &s->part, &s->cnt, &s->xq2, &s->cnt_glu, &s->cnt_norm,
                               &s->params1, &s->logits1, &s->result1, &s->blk_ss };
        for (size_t i = 0; i < ELEMENTSOF(bufs); i++)
                qvk_buffer_free(*bufs[i]);
        return mfree(s);
}

int llama_vk_seq_new(LlamaVk *v, uint32_t n_ctx, LlamaVkSeq **ret) {
        _cleanup_(llama_vk_seq_freep) LlamaVkSeq *s = NULL;
        const LlamaHParams *hp = &v->w->hp;
        uint32_t E = hp->n_embd, nq = hp->n_head * hp->head_dim, nkv = hp->n_head_kv * hp->head_dim;
        uint32_t F = hp->n_ff;
        int r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->v = v;
        s->id = ++v->next_seq_id;
        s->spec = -1;
        s->n_ctx = n_ctx;
        s->ubatch = MIN(UBATCH, n_ctx);
        s->kv_stride = ALIGN_TO((uint64_t) n_ctx * nkv * (v->kv_f16 ? 2 : 4), ALIGN);
        uint64_t ub = s->ubatch;
        s->kps = MAX(64u, ALIGN_TO(DIV_ROUND_UP(n_ctx, 128u), 32u));
        s->n_split = DIV_ROUND_UP(n_ctx, s->kps);
        uint32_t kmax = MAX(MAX(E, F), nq);
        uint64_t scratch = MAX(qvk_matmul_scratch_bytes(v->d, kmax, s->ubatch),
                               qvk_matmul_scratch_bytes(v->d, kmax, 1));
        uint64_t cnt_glu = cnt_glu_bytes(F), cnt_norm = cnt_norm_bytes(E);
        struct {
                QvkBuffer **b;
                uint64_t size;
                QvkMemKind kind;
        } list[] = {
                { &s->kc, s->kv_stride * hp->n_layer, QVK_MEM_DEVICE },
                { &s->vc, s->kv_stride * hp->n_layer, QVK_MEM_DEVICE },
                { &s->x, ub * E * 4, QVK_MEM_DEVICE },
                { &s->x2, E * 4, QVK_MEM_DEVICE },
                { &s->xb, ub * E * 4, QVK_MEM_DEVICE },
                { &s->qkv, ub * (nq + 2 * nkv) * 4, QVK_MEM_DEVICE },
                { &s->q, ub * nq * 4, QVK_MEM_DEVICE },
                { &s->att, ub * nq * 4, QVK_MEM_DEVICE },
                { &s->o, ub * E * 4, QVK_MEM_DEVICE },
                { &s->gu, ub * 2 * F * 4, QVK_MEM_DEVICE },
                { &s->g, ub * F * 4, QVK_MEM_DEVICE },
                { &s->xlast, E * 4, QVK_MEM_DEVICE },
                { &s->logits, (uint64_t) hp->n_vocab * 4, QVK_MEM_DEVICE },
                { &s->scratch, MAX(scratch, 256u), QVK_MEM_DEVICE },
                { &s->tokens, ub * 4, QVK_MEM_HOST },
                { &s->params, 256, QVK_MEM_HOST },
                { &s->result, 256, QVK_MEM_HOST },
                /* the decode step's parity 1 (llama-vulkan-runahead.c) */
                { &s->params1, 256, QVK_MEM_HOST },
                { &s->result1, 256, QVK_MEM_HOST },
                { &s->logits1, (uint64_t) hp->n_vocab * 4, QVK_MEM_DEVICE },
                { &s->cnt, (uint64_t) hp->n_head * 4, QVK_MEM_DEVICE },
                { &s->xq2, MAX(qvk_q8_bytes(kmax, 1), 256u), QVK_MEM_DEVICE },
                { &s->cnt_glu, cnt_glu, QVK_MEM_DEVICE },
                { &s->cnt_norm, cnt_norm, QVK_MEM_DEVICE },
                { &s->blk_ss, MAX((uint64_t) DIV_ROUND_UP(E, 32u) * 4, 256u), QVK_MEM_DEVICE },
                /* split-K attention partials, also the argmax slices (256 x 3 floats) */
                { &s->part, MAX(3072u, (uint64_t) hp->n_head * s->n_split * (hp->head_dim + 2) * 4), QVK_MEM_DEVICE },
        };
        for (size_t i = 0; i < ELEMENTSOF(list); i++) {
                r = qvk_buffer_new(v->d, list[i].size, list[i].kind, list[i].b);
                if (r < 0)
                        return r;
        }
        {
                /* the counters of the decode attention and of the products' epilogues start at 0;
                 * their last workgroups reset them */
                _cleanup_free_ uint32_t *zero = calloc(MAX(MAX(hp->n_head, cnt_glu / 4), cnt_norm / 4), 4);
                if (!zero)
                        return -ENOMEM;
                if ((r = qvk_buffer_upload(s->cnt, 0, zero, (uint64_t) hp->n_head * 4)) < 0 ||
                    (r = qvk_buffer_upload(s->cnt_glu, 0, zero, cnt_glu)) < 0 ||
                    (r = qvk_buffer_upload(s->cnt_norm, 0, zero, cnt_norm)) < 0)
                        return r;
        }
        *ret = TAKE_PTR(s);
        return 0;
}

uint32_t llama_vk_seq_length(LlamaVkSeq *s) {
        return s->len;
}


int llama_vk_mm(QvkCmd *c, QvkBuffer *scratch, QvkBuffer *wbuf, const VkTensor *t, QvkBuffer *x,
                QvkBuffer *y, uint32_t n) {
        if (t->n_seg > 0) {
                QvkRowBlock b[ELEMENTSOF(t->seg)];
                for (uint32_t i = 0; i < t->n_seg; i++)
                        b[i] = (QvkRowBlock) { t->seg[i].wt,
                                               B(wbuf, t->off + t->seg[i].off,
                                                 qvk_weight_row_bytes(t->seg[i].wt, t->k) * t->seg[i].m),
                                               t->seg[i].m };
                return qvk_matmul_blocks(c, b, t->n_seg, t->k, B(x, 0, (uint64_t) n * t->k * 4), false, n,
                                         B(y, 0, (uint64_t) n * t->m * 4));
        }
        if (t->own.n_parts) {
                QvkBinding wb[t->own.n_parts];
                uint32_t rows[t->own.n_parts];
                for (uint32_t i = 0; i < t->own.n_parts; i++) {
                        rows[i] = (uint32_t) MIN(t->own.part_rows, t->m - i * t->own.part_rows);
                        wb[i] = B(t->own.parts[i], 0, rows[i] * t->own.row_bytes);
                }
                return qvk_matmul_parts(c, t->wt, wb, rows, t->own.n_parts, t->m, t->k,
                                        B(x, 0, (uint64_t) n * t->k * 4), false, n,
                                        B(y, 0, (uint64_t) n * t->m * 4), B(scratch, 0, 0));
        }
        return qvk_matmul(c, t->wt, B(wbuf, t->off, t->bytes), t->m, t->k, B(x, 0, (uint64_t) n * t->k * 4),
                          false, n, B(y, 0, (uint64_t) n * t->m * 4), B(scratch, 0, 0));
}

int llama_vk_get_rows(QvkCmd *c, LlamaVk *v, QvkBuffer *tokens, uint32_t n, QvkBuffer *x) {
        const QvkSplit *t = &v->table;
        uint32_t E = v->w->hp.n_embd;
        /* Chunks of the table within maxStorageBufferRange, at offsets any device accepts. */
        uint64_t q = ALIGN_COUNT(t->row_bytes, ALIGN);
        uint64_t chunk = qvk_device_features(v->d)->max_storage_buffer_range / t->row_bytes / q * q;
        int r;

        if (chunk == 0)
                return -E2BIG;
        for (uint32_t p = 0; p < t->n_parts; p++) {
                uint64_t rows = MIN(t->part_rows, t->rows - p * t->part_rows);
                for (uint64_t r0 = 0; r0 < rows; r0 += chunk) {
                        uint64_t nr = MIN(chunk, rows - r0);
                        /* Each dispatch fills the columns whose token lies in its rows. */
                        uint32_t push[3] = { E, (uint32_t) (p * t->part_rows + r0), (uint32_t) nr };
                        QvkBinding b[] = { B(tokens, 0, n * 4), B(t->parts[p], r0 * t->row_bytes, nr * t->row_bytes),
                                           B(x, 0, (uint64_t) n * E * 4) };
                        r = qvk_cmd_dispatch(c, v->p_get_rows, b, 3, 1u << 2, push, sizeof(push),
                                             DIV_ROUND_UP(E, 64), n, 1);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

static int mm(QvkCmd *c, LlamaVkSeq *s, QvkBuffer *wbuf, const VkTensor *t, QvkBuffer *x,
              QvkBuffer *y, uint32_t n) {
        return llama_vk_mm(c, s->scratch, wbuf, t, x, y, n);
}

/* Whether the op before the product with t writes its input as int8 blocks into s->scratch
 * (decode on the int-dot path) for mm_q8() instead of the f32 activations for mm(). */
/* Whether the op before t writes its int8 blocks itself: one token, the int-dot path, and t
 * bound whole (a tensor split over allocations or beyond maxStorageBufferRange goes through
 * llama_vk_mm(), which quantizes the activations in its own dispatch). */
static bool fuse_q8(LlamaVkSeq *s, const VkTensor *t, uint32_t n) {
        return n == 1 && s->v->p_norm_q8 && t->own.n_parts == 0 && t->n_seg == 0 &&
               t->bytes <= qvk_device_features(s->v->d)->max_storage_buffer_range &&
               qvk_matmul_wants_q8(s->v->d, t->wt, t->k, 1);
}

/* The product with t of the int8 blocks in xq (s->scratch or s->xq2). */
static int mm_q8(QvkCmd *c, QvkBuffer *wbuf, const VkTensor *t, QvkBuffer *xq, QvkBuffer *y) {
        return qvk_matmul_q8(c, t->wt, B(wbuf, t->off, t->bytes), t->m, t->k, B(xq, 0, qvk_q8_bytes(t->k, 1)), 1,
                             B(y, 0, (uint64_t) t->m * 4));
}

/* The int8 block buffer that an op reading from xq writes its own output blocks to. */
static QvkBuffer *xq_other(LlamaVkSeq *s, QvkBuffer *xq) {
        return xq == s->scratch ? s->xq2 : s->scratch;
}

/* Whether the product with t (its input as int8 blocks where x_q8) runs with epilogue e
 * (qvk_matvec_epi): one token, fusion on, t bound whole in one format. */
static bool epi_ok(LlamaVkSeq *s, const VkTensor *t, QvkMatvecEpi e, bool x_q8, uint32_t n) {
        bool glu = e == QVK_EPI_GLU || e == QVK_EPI_GLU_Q8;

        return n == 1 && !(s->v->fusion & LLAMA_VK_FUSE_BLK) &&
               (s->v->fusion & (glu ? LLAMA_VK_FUSE_GLU : LLAMA_VK_FUSE_NORM)) && t->own.n_parts == 0 && t->n_seg == 0 &&
               t->bytes <= qvk_device_features(s->v->d)->max_storage_buffer_range && (!glu || t->m % 2 == 0) &&
               qvk_matvec_epi_ok(s->v->d, e, t->wt, glu ? t->m / 2 : t->m, t->k, x_q8);
}

/* wo or down of one token with the residual add and the next norm folded in: xout = xin + t·x,
 * xb = RMSNorm(xout) * the norm weights at w_off, or where xq_out that as int8 blocks there
 * instead (xb is then not written: nothing of the decode step reads it). */
static int mm_norm(QvkCmd *c, LlamaVkSeq *s, QvkBuffer *wbuf, const VkTensor *t, QvkBinding x, bool x_q8,
                   QvkBuffer *xin, QvkBuffer *xout, uint64_t w_off, QvkBuffer *xq_out) {
        LlamaVk *v = s->v;
        uint32_t E = t->m;
        QvkBinding extra[5] = {
                B(xin, 0, (uint64_t) E * 4),
                B(v->common, w_off, (uint64_t) E * 4),
                B(s->xb, 0, (uint64_t) E * 4),
                B(s->cnt_norm, 0, cnt_norm_bytes(E)),
                B(xq_out ? xq_out : s->scratch, 0, qvk_q8_bytes(E, 1)),
        };
        return qvk_matvec_epi(c, xq_out ? QVK_EPI_NORM_Q8 : QVK_EPI_NORM, t->wt, B(wbuf, t->off, t->bytes), E, t->k,
                              x, x_q8, B(xout, 0, (uint64_t) E * 4), extra, v->w->hp.eps);
}

/* The gate/up product of one token with SiLU·up folded in: s->g = silu(gate) * up, and where
 * xq_out also as int8 blocks there. */
static int mm_glu(QvkCmd *c, LlamaVkSeq *s, QvkBuffer *wbuf, const VkTensor *t, QvkBinding x, bool x_q8,
                  QvkBuffer *xq_out) {
        uint32_t F = t->m / 2;
        QvkBinding extra[2] = {
                B(s->cnt_glu, 0, cnt_glu_bytes(F)),
                B(xq_out ? xq_out : s->scratch, 0, qvk_q8_bytes(F, 1)),
        };
        return qvk_matvec_epi(c, xq_out ? QVK_EPI_GLU_Q8 : QVK_EPI_GLU, t->wt, B(wbuf, t->off, t->bytes), F, t->k,
                              x, x_q8, B(s->g, 0, (uint64_t) F * 4), extra, 0.0f);
}

/* blk mode: how the product with t runs on the blk kernels (qvk_matvec_blk, qvk_matmul_ps) with
 * m output rows (a multiple of 32; 32 for a product that only takes prescaled input): BLK_Q8 on
 * int8 blocks written by the op before it (fuse_q8: repacked int-dot rows), BLK_F16 on fp32
 * values (F16 rows), BLK_NONE not (one token, t bound whole, the residual through x2). */
enum { BLK_NONE, BLK_Q8, BLK_F16 };
static int blk_kind(LlamaVkSeq *s, const VkTensor *t, uint32_t m, uint32_t n) {
        if (!(s->v->fusion & LLAMA_VK_FUSE_BLK) || n != 1 || !s->v->p_norm_wide || t->own.n_parts || t->n_seg ||
            t->bytes > qvk_device_features(s->v->d)->max_storage_buffer_range ||
            !qvk_matvec_blk_ok(s->v->d, t->wt, m, t->k))
                return BLK_NONE;
        return t->wt == QVK_W_F16 ? BLK_F16 : fuse_q8(s, t, n) ? BLK_Q8 : BLK_NONE;
}

/* blk mode: wo or down with the residual add and the next RMSNorm's unscaled input:
 * xout = xin + t·x, x being the int8 blocks in *xq (q8: BLK_Q8) or the floats xf (BLK_F16);
 * then u = xout * the norm weights at w_off, as int8 blocks into the other block buffer (which
 * *xq then names) or as floats into s->xb, and s->blk_ss the sums of squares of xout, for the
 * next product's prescale. */
static int mm_blk_norm(QvkCmd *c, LlamaVkSeq *s, QvkBuffer *wbuf, const VkTensor *t, bool q8, QvkBuffer **xq,
                       QvkBuffer *xf, QvkBuffer *xin, QvkBuffer *xout, uint64_t w_off) {
        uint32_t E = t->m;
        QvkBuffer *out = q8 ? xq_other(s, *xq) : s->xb;
        QvkBinding extra[4] = {
                B(xin, 0, (uint64_t) E * 4),
                B(s->v->common, w_off, (uint64_t) E * 4),
                B(out, 0, q8 ? qvk_q8_bytes(E, 1) : (uint64_t) E * 4),
                B(s->blk_ss, 0, (uint64_t) E / 32 * 4),
        };
        QvkBinding x = q8 ? B(*xq, 0, qvk_q8_bytes(t->k, 1)) : B(xf, 0, (uint64_t) t->k * 4);
        int r = qvk_matvec_blk(c, QVK_BLK_NORM, t->wt, B(wbuf, t->off, t->bytes), E, t->k, x, (QvkBinding) {},
                               B(xout, 0, (uint64_t) E * 4), extra, s->v->w->hp.eps);
        if (q8)
                *xq = out;
        return r;
}

/* The prescale binding of a product whose input came from mm_blk_norm() (ps), or none. */
static QvkBinding blk_ps(LlamaVkSeq *s, bool ps) {
        return ps ? B(s->blk_ss, 0, (uint64_t) s->v->w->hp.n_embd / 32 * 4) : (QvkBinding) {};
}

/* The product with t of the normalised activations (int8 blocks in xq where fuse_q8, else
 * s->xb), prescaled where ps (blk mode). */
static int mm_in(QvkCmd *c, LlamaVkSeq *s, QvkBuffer *wbuf, const VkTensor *t, QvkBuffer *xq, bool ps, QvkBuffer *y,
                 uint32_t n) {
        bool q8 = fuse_q8(s, t, n);

        if (ps)
                return qvk_matmul_ps(c, t->wt, B(wbuf, t->off, t->bytes), t->m, t->k,
                                     q8 ? B(xq, 0, qvk_q8_bytes(t->k, 1)) : B(s->xb, 0, (uint64_t) t->k * 4), blk_ps(s, true),
                                     s->v->w->hp.eps, B(y, 0, (uint64_t) t->m * 4));
        return q8 ? mm_q8(c, wbuf, t, xq, y) : mm(c, s, wbuf, t, s->xb, y, n);
}

/* Norm of the residual into xb (after adding o to it when add), and into int8 blocks for the
 * product with next where fuse_q8(). One token: over many workgroups (rmsnorm-wide.comp), the
 * sum x + o going from xin to xout (the other workgroups still read xin); else in place in x
 * (xin == xout), one workgroup per row. */
static int norm(QvkCmd *c, LlamaVkSeq *s, bool add, QvkBuffer *xin, QvkBuffer *xout, uint64_t w_off,
                const VkTensor *next, uint32_t n) {
        LlamaVk *v = s->v;
        const LlamaHParams *hp = &v->w->hp;
        uint32_t E = hp->n_embd;
        struct {
                uint32_t n;
                float eps;
        } pn = { E, hp->eps };
        QvkBinding b[6] = { B(xin, 0, (uint64_t) n * E * 4), B(v->common, w_off, E * 4),
                            B(s->xb, 0, (uint64_t) n * E * 4) };
        uint32_t nb = 3, writes = 1u << 2;

        if (n > 1 || !v->p_norm_wide) {
                assert(xin == xout);
                if (add) {
                        b[nb++] = B(s->o, 0, (uint64_t) n * E * 4);
                        writes |= 1u << 0;
                }
                return qvk_cmd_dispatch(c, add ? v->p_add_norm : v->p_norm, b, nb, writes, &pn, sizeof(pn), n, 1, 1);
        }
        bool q8 = fuse_q8(s, next, n);
        QvkPipeline *p = add ? (q8 ? v->p_add_norm_q8 : v->p_add_norm_wide) : (q8 ? v->p_norm_q8 : v->p_norm_wide);
        if (add) {
                b[nb++] = B(s->o, 0, (uint64_t) E * 4);
                writes |= 1u << nb;
                b[nb++] = B(xout, 0, (uint64_t) E * 4);
        }
        if (q8) {
                writes |= 1u << nb;
                b[nb++] = B(s->scratch, 0, qvk_q8_bytes(E, 1));
        }
        return qvk_cmd_dispatch(c, p, b, nb, writes, &pn, sizeof(pn), DIV_ROUND_UP(E, 512), 1, 1);
}

int llama_vk_attn_decode(QvkCmd *c, LlamaVkSeq *s, uint32_t l, QvkBinding q, QvkBinding att, bool rope,
                         bool q8) {
        LlamaVk *v = s->v;
        const LlamaHParams *hp = &v->w->hp;
        uint32_t nq = hp->n_head * hp->head_dim, nkv = hp->n_head_kv * hp->head_dim;
        QvkBinding b[10] = {
                q,
                B(s->kc, l * s->kv_stride, s->kv_stride),
                B(s->vc, l * s->kv_stride, s->kv_stride),
                att,
                B(s->params, 0, 16),
                B(s->part, 0, 0),
                B(s->cnt, 0, 0),
        };
        uint32_t nb = 7, writes = (1u << 3) | (1u << 5) | (1u << 6);
        struct {
                uint32_t n_head, n_head_kv;
                float scale;
                uint32_t kps, n_split, n_rot, has_bias, n_ctx;
        } push = { hp->n_head, hp->n_head_kv, 1.0f / sqrtf((float) hp->head_dim), s->kps, s->n_split, hp->n_rot,
                   hp->qkv_bias, s->n_ctx };
        QvkPipeline *p = v->p_attn_dec;

        if (q8 && (!rope || !v->p_attn_dec_rope_q8))
                return -EINVAL;
        if (rope) {
                /* q is the Q/K/V projection; K and V of the new position go into the cache */
                b[nb++] = hp->qkv_bias ? B(v->common, v->off_bias[l], (nq + 2 * nkv) * 4)
                                       : B(v->common, v->off_freq, hp->n_rot / 2 * 4);
                b[nb++] = B(v->common, v->off_freq, hp->n_rot / 2 * 4);
                writes |= (1u << 1) | (1u << 2);
                p = q8 ? v->p_attn_dec_rope_q8 : v->p_attn_dec_rope;
        }
        if (q8) {
                writes |= 1u << nb;
                b[nb++] = B(s->scratch, 0, qvk_q8_bytes(nq, 1));
        }
        return qvk_cmd_dispatch(c, p, b, nb, writes, &push, sizeof(push), hp->n_head, 1, s->n_split);
}

static int record(LlamaVkSeq *s, QvkCmd *c, uint32_t n) {
        LlamaVk *v = s->v;
        const LlamaHParams *hp = &v->w->hp;
        const Variant *var = &v->var[v->cur];
        uint32_t E = hp->n_embd, nq = hp->n_head * hp->head_dim, nkv = hp->n_head_kv * hp->head_dim;
        uint32_t F = hp->n_ff, nl = hp->n_layer;
        int r;

        r = qvk_cmd_reset(c);
        if (r < 0)
                return r;
        s->n_stamps = 0;
        if ((r = stamp(c, s, 0)) < 0)
                return r;
        {
                r = llama_vk_get_rows(c, v, s->tokens, n, s->x);
                if (r < 0 || (r = stamp(c, s, 0)) < 0)
                        return r;
        }
        r = norm(c, s, false, s->x, s->x, v->off_attn_norm[0], nl > 0 ? &var->layers[0].qkv : &var->output, n);
        if (r < 0 || (r = stamp(c, s, 0)) < 0)
                return r;
        /* where the next int-dot product's int8 blocks are: the ops write s->scratch, the fused
         * epilogues the one of s->scratch and s->xq2 that their own product does not read */
        QvkBuffer *xq = s->scratch;
        bool ps = false;  /* blk mode: xq holds the unscaled blocks of an RMSNorm (mm_blk_norm) */
        for (uint32_t l = 0; l < nl; l++) {
                const VkLayerW *L = &var->layers[l];
                QvkBuffer *wb = var->bufs[l];
                bool wo_q8 = false;

                /* calibration: xb holds attn_norm(x) of this layer (capture hooks, prompts only) */
                if (n > 1 && s->capture && (r = llama_vk_capture_record(c, s, l, LLAMA_SITE_ATTN_IN, s->xb, n)) < 0)
                        return r;
                r = mm_in(c, s, wb, &L->qkv, xq, ps, s->qkv, n);
                ps = false;
                if (r < 0 || (r = stamp(c, s, l)) < 0)
                        return r;
                if (n == 1) {
                        /* one dispatch: the rotation, the KV store and the attention; the last
                         * workgroup of each head combines the splits */
                        wo_q8 = v->p_attn_dec_rope_q8 && fuse_q8(s, &L->wo, n);
                        r = llama_vk_attn_decode(c, s, l, B(s->qkv, 0, (uint64_t) (nq + 2 * nkv) * 4),
                                                 B(s->att, 0, (uint64_t) nq * 4), true, wo_q8);
                        if (wo_q8)
                                xq = s->scratch;
                        /* the profile's rope and attention stamps, together */
                        if (r < 0 || (r = stamp(c, s, l)) < 0 || (r = stamp(c, s, l)) < 0)
                                return r;
                }
                if (n > 1) {
                        QvkBinding b[] = {
                                B(s->qkv, 0, (uint64_t) n * (nq + 2 * nkv) * 4),
                                B(s->q, 0, (uint64_t) n * nq * 4),
                                hp->qkv_bias ? B(v->common, v->off_bias[l], (nq + 2 * nkv) * 4)
                                             : B(v->common, v->off_freq, hp->n_rot / 2 * 4),
                                B(v->common, v->off_freq, hp->n_rot / 2 * 4),
                                B(s->kc, l * s->kv_stride, s->kv_stride),
                                B(s->vc, l * s->kv_stride, s->kv_stride),
                                B(s->params, 0, 16),
                        };
                        uint32_t push[5] = { hp->n_head, hp->n_head_kv, hp->head_dim, hp->n_rot, hp->qkv_bias };
                        uint32_t total = hp->head_dim / 2 * (hp->n_head + 2 * hp->n_head_kv);
                        r = qvk_cmd_dispatch(c, v->p_rope, b, 7, (1u << 1) | (1u << 4) | (1u << 5), push,
                                             sizeof(push), DIV_ROUND_UP(total, 64), n, 1);
                        if (r < 0 || (r = stamp(c, s, l)) < 0)
                                return r;
                }
                if (n > 1) {
                        if ((r = llama_vk_attn_prompt(c, s, l, n)) < 0 || (r = stamp(c, s, l)) < 0)
                                return r;
                        if (s->capture && (r = llama_vk_capture_record(c, s, l, LLAMA_SITE_ATTN_OUT, s->att, n)) < 0)
                                return r;
                }
                bool gu_q8 = fuse_q8(s, &L->gu, n), down_q8 = fuse_q8(s, &L->down, n);
                const VkTensor *next = l + 1 < nl ? &var->layers[l + 1].qkv : &var->output;
                bool next_q8 = fuse_q8(s, next, n);
                uint64_t next_norm = l + 1 < nl ? v->off_attn_norm[l + 1] : v->off_out_norm;
                /* One token: the residual add and the norm after it in the epilogues of the wo
                 * and down products (both or neither: the residual goes x -> x2 -> x), SiLU·up
                 * in that of gate/up; 5 dispatches a layer instead of 8. */
                bool fnorm = epi_ok(s, &L->wo, gu_q8 ? QVK_EPI_NORM_Q8 : QVK_EPI_NORM, wo_q8, n) &&
                             epi_ok(s, &L->down, next_q8 ? QVK_EPI_NORM_Q8 : QVK_EPI_NORM, down_q8, n);
                bool fglu = epi_ok(s, &L->gu, down_q8 ? QVK_EPI_GLU_Q8 : QVK_EPI_GLU, gu_q8, n);
                /* blk mode (fnorm, fglu false): wo and down with whole blocks of the next norm
                 * where the product after them applies its scale (not the output product: the
                 * last layer's down keeps its norm dispatch), gate/up with SiLU·up's blocks */
                int kwo = blk_kind(s, &L->wo, E, n), kgu = L->gu.m == 2 * F ? blk_kind(s, &L->gu, F, n) : BLK_NONE;
                int kdown = blk_kind(s, &L->down, E, n);
                bool bwo = kwo && (kwo == BLK_F16 || wo_q8) && kwo == blk_kind(s, &L->gu, 32, n);
                bool bglu = kgu && kgu == blk_kind(s, &L->down, 32, n);
                bool bdown = l + 1 < nl && kdown && kdown == blk_kind(s, next, 32, n);
                /* one token: the residual goes to x2 and back (rmsnorm-wide.comp or the epilogues) */
                QvkBuffer *xmid = n == 1 && (v->p_norm_wide || fnorm) ? s->x2 : s->x;
                if (bwo) {
                        r = mm_blk_norm(c, s, wb, &L->wo, kwo == BLK_Q8, &xq, s->att, s->x, xmid, v->off_ffn_norm[l]);
                        ps = true;
                        if (r < 0 || (r = stamp(c, s, l)) < 0 || (r = stamp(c, s, l)) < 0)
                                return r;
                } else if (fnorm) {
                        QvkBuffer *out = gu_q8 ? xq_other(s, xq) : NULL;
                        QvkBinding x = wo_q8 ? B(xq, 0, qvk_q8_bytes(nq, 1)) : B(s->att, 0, (uint64_t) nq * 4);
                        r = mm_norm(c, s, wb, &L->wo, x, wo_q8, s->x, xmid, v->off_ffn_norm[l], out);
                        xq = out ? out : xq;
                        /* the profile's wo and add+rmsnorm stamps, together */
                        if (r < 0 || (r = stamp(c, s, l)) < 0 || (r = stamp(c, s, l)) < 0)
                                return r;
                } else {
                        r = wo_q8 ? mm_q8(c, wb, &L->wo, xq, s->o) : mm(c, s, wb, &L->wo, s->att, s->o, n);
                        if (r < 0 || (r = stamp(c, s, l)) < 0)
                                return r;
                        if ((r = norm(c, s, true, s->x, xmid, v->off_ffn_norm[l], &L->gu, n)) < 0 ||
                            (r = stamp(c, s, l)) < 0)
                                return r;
                        xq = gu_q8 ? s->scratch : xq;
                }
                if (n > 1 && s->capture && (r = llama_vk_capture_record(c, s, l, LLAMA_SITE_FFN_IN, s->xb, n)) < 0)
                        return r;
                if (bglu) {
                        bool q8 = kgu == BLK_Q8;
                        QvkBuffer *out = xq_other(s, xq);
                        QvkBinding extra[1] = { B(out, 0, qvk_q8_bytes(F, 1)) };
                        r = qvk_matvec_blk(c, QVK_BLK_GLU, L->gu.wt, B(wb, L->gu.off, L->gu.bytes), F, L->gu.k,
                                           q8 ? B(xq, 0, qvk_q8_bytes(E, 1)) : B(s->xb, 0, (uint64_t) E * 4),
                                           blk_ps(s, ps), B(s->g, 0, (uint64_t) F * 4), extra, hp->eps);
                        xq = q8 ? out : xq;
                        ps = false;
                        if (r < 0 || (r = stamp(c, s, l)) < 0 || (r = stamp(c, s, l)) < 0)
                                return r;
                } else if (fglu) {
                        QvkBuffer *out = down_q8 ? xq_other(s, xq) : NULL;
                        QvkBinding x = gu_q8 ? B(xq, 0, qvk_q8_bytes(E, 1)) : B(s->xb, 0, (uint64_t) E * 4);
                        r = mm_glu(c, s, wb, &L->gu, x, gu_q8, out);
                        xq = out ? out : xq;
                        /* the profile's gate/up and silu*up stamps, together */
                        if (r < 0 || (r = stamp(c, s, l)) < 0 || (r = stamp(c, s, l)) < 0)
                                return r;
                } else {
                        r = mm_in(c, s, wb, &L->gu, xq, ps, s->gu, n);
                        ps = false;
                        if (r < 0 || (r = stamp(c, s, l)) < 0)
                                return r;
                        if (down_q8) {
                                QvkBinding b[] = { B(s->gu, 0, (uint64_t) n * 2 * F * 4), B(s->scratch, 0, qvk_q8_bytes(F, n)) };
                                uint32_t push[2] = { F, n * F / 32 };
                                r = qvk_cmd_dispatch(c, v->p_silu_q8, b, 2, 1u << 1, push, 8, DIV_ROUND_UP(push[1], 32), 1, 1);
                                xq = s->scratch;
                        } else {
                                QvkBinding b[] = { B(s->gu, 0, (uint64_t) n * 2 * F * 4), B(s->g, 0, (uint64_t) n * F * 4) };
                                uint32_t push[2] = { F, n * F }, groups = DIV_ROUND_UP(n * F, 256), gx = MIN(groups, 65535u);
                                r = qvk_cmd_dispatch(c, v->p_silu, b, 2, 1u << 1, push, 8, gx, DIV_ROUND_UP(groups, gx), 1);
                        }
                        if (r < 0 || (r = stamp(c, s, l)) < 0)
                                return r;
                }
                if (n > 1 && s->capture && (r = llama_vk_capture_record(c, s, l, LLAMA_SITE_FFN_DOWN, s->g, n)) < 0)
                        return r;
                if (bdown) {
                        r = mm_blk_norm(c, s, wb, &L->down, kdown == BLK_Q8, &xq, s->g, xmid, s->x, next_norm);
                        ps = true;
                        if (r < 0 || (r = stamp(c, s, l)) < 0 || (r = stamp(c, s, l)) < 0)
                                return r;
                } else if (fnorm) {
                        QvkBuffer *out = next_q8 ? xq_other(s, xq) : NULL;
                        QvkBinding x = down_q8 ? B(xq, 0, qvk_q8_bytes(F, 1)) : B(s->g, 0, (uint64_t) F * 4);
                        r = mm_norm(c, s, wb, &L->down, x, down_q8, xmid, s->x, next_norm, out);
                        xq = out ? out : xq;
                        if (r < 0 || (r = stamp(c, s, l)) < 0 || (r = stamp(c, s, l)) < 0)
                                return r;
                } else {
                        r = down_q8 ? mm_q8(c, wb, &L->down, xq, s->o) : mm(c, s, wb, &L->down, s->g, s->o, n);
                        if (r < 0 || (r = stamp(c, s, l)) < 0)
                                return r;
                        r = norm(c, s, true, xmid, s->x, next_norm, next, n);
                        if (r < 0 || (r = stamp(c, s, l)) < 0)
                                return r;
                        xq = next_q8 ? s->scratch : xq;
                }
        }
        if ((r = stamp(c, s, 0)) < 0)
                return r;
        if (fuse_q8(s, &var->output, n))
                r = mm_q8(c, var->bufs[nl], &var->output, xq, s->logits);
        else {
                r = qvk_cmd_copy(c, s->xb, (uint64_t) (n - 1) * E * 4, s->xlast, 0, E * 4);
                if (r >= 0)
                        r = mm(c, s, var->bufs[nl], &var->output, s->xlast, s->logits, 1);
        }
        if (r < 0 || (r = stamp(c, s, 0)) < 0)
                return r;
        {
                /* at most 256 slices of at least 1024 logits */
                uint32_t per = MAX(1024u, ALIGN_TO(DIV_ROUND_UP(hp->n_vocab, 256u), 256u));
                uint32_t groups = DIV_ROUND_UP(hp->n_vocab, per);
                uint32_t push[4] = { hp->n_vocab, per, groups, 0 };
                QvkBinding b[] = { B(s->logits, 0, (uint64_t) hp->n_vocab * 4), B(s->part, 0, 0), B(s->result, 0, 8) };
                r = qvk_cmd_dispatch(c, v->p_argmax, b, 3, 1u << 1, push, sizeof(push), groups, 1, 1);
                push[3] = 1;
                if (r >= 0)
                        r = qvk_cmd_dispatch(c, v->p_argmax, b, 3, 1u << 2, push, sizeof(push), 1, 1, 1);
                if (r < 0 || (r = stamp(c, s, 0)) < 0)
                        return r;
        }
        return qvk_cmd_end(c);
}

int llama_vk_seq_record(LlamaVkSeq *s, QvkCmd *c, uint32_t n) {
        return record(s, c, n);
}

int llama_vk_seq_logits(LlamaVkSeq *s, float *logits) {
        QvkBuffer *lg;

        if (s->len == 0)
                return -EINVAL;
        (void) llama_vk_seq_io(s, s->last, &lg, NULL);
        return qvk_buffer_download(lg, 0, logits, (uint64_t) s->v->w->hp.n_vocab * 4);
}

int llama_vk_seq_eval(LlamaVkSeq *s, const int32_t *tokens, size_t n, bool want_logits,
                      float *logits, int32_t *ret_argmax, float *ret_logprob) {
        LlamaVk *v = s->v;
        QvkBuffer *res;
        int r;

        if (n == 0)
                return -EINVAL;
        if (n > s->n_ctx - s->len)
                return -ENOSPC;
        for (size_t i = 0; i < n; i++)
                if (tokens[i] < 0 || (uint32_t) tokens[i] >= v->w->hp.n_vocab)
                        return -EINVAL;

        /* one token: the decode step, queued ahead (run-ahead) where nobody wants the logits */
        if (n == 1 && (r = llama_vk_seq_decode(s, tokens[0], !want_logits && !s->capture)) < 0)
                return r;
        if (n > 1 && (r = llama_vk_seq_settle(s)) < 0)
                return r;
        for (size_t done = 0; n > 1 && done < n;) {
                uint32_t cnt = MIN(n - done, (size_t) s->ubatch);

                if (cnt == 1) { /* the prompt's last token on its own */
                        if ((r = llama_vk_seq_decode(s, tokens[done], false)) < 0)
                                return r;
                        done++;
                        continue;
                }
                if (!s->cmd_prefill) {
                        r = qvk_cmd_new(v->d, &s->cmd_prefill);
                        if (r < 0)
                                return r;
                        s->gen_prefill = UINT64_MAX;
                }
                if (s->gen_prefill != v->generation || s->prefill_n != cnt) {
                        r = record(s, s->cmd_prefill, cnt);
                        if (r < 0) {
                                s->gen_prefill = UINT64_MAX;
                                return r;
                        }
                        s->gen_prefill = v->generation;
                        s->prefill_n = cnt;
                }
                memcpy(qvk_buffer_map(s->tokens), tokens + done, cnt * sizeof(int32_t));
                uint32_t *prm = qvk_buffer_map(s->params);
                prm[0] = s->len;
                prm[1] = cnt;
                r = qvk_cmd_submit(s->cmd_prefill);
                if (r < 0)
                        return r;
                r = qvk_cmd_wait(s->cmd_prefill);
                if (r < 0)
                        return r;
                s->len += cnt;
                s->last = 0; /* the prompt's logits and argmax are parity 0's */
                done += cnt;
        }

        (void) llama_vk_seq_io(s, s->last, NULL, &res);
        const uint32_t *rv = qvk_buffer_map(res);
        if (ret_argmax)
                *ret_argmax = (int32_t) rv[0];
        if (ret_logprob)
                memcpy(ret_logprob, &rv[1], sizeof(float));
        if (want_logits)
                return llama_vk_seq_logits(s, logits);
        return 0;
}
