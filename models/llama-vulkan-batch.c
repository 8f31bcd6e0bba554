/* The batched decode of the Vulkan forward pass: one token of each of n sequences per
 * submission. Every linear layer runs once over n columns, so its weights are read once
 * (batched matrix-vector kernels up to 8 columns, the matrix-matrix kernel above); RoPE, the
 * KV store and attention run per column against that sequence's own cache and position (its
 * parameter buffer); the logits of column j land in sequence j's logits buffer and its greedy
 * pick in its result buffer, as after a single-token llama_vk_seq_eval(). */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "llama-vulkan-internal.h"
#include "macro.h"

void llama_vk_batch_done(Batch *b) {
        QvkBuffer **bufs[] = { &b->x, &b->xb, &b->qkv, &b->q, &b->att, &b->o, &b->gu, &b->g,
                               &b->logits, &b->scratch, &b->tokens };
        for (size_t i = 0; i < ELEMENTSOF(bufs); i++)
                *bufs[i] = qvk_buffer_free(*bufs[i]);
        b->cap = 0;
        b->gen = UINT64_MAX; /* the recording named the buffers */
}

static int batch_reserve(LlamaVk *v, uint32_t n) {
        Batch *b = &v->batch;
        const LlamaHParams *hp = &v->w->hp;
        uint64_t E = hp->n_embd, nq = hp->n_head * hp->head_dim, nkv = hp->n_head_kv * hp->head_dim;
        uint64_t F = hp->n_ff, cap;
        int r;

        if (b->cap >= n)
                return 0;
        llama_vk_batch_done(b);
        cap = n <= 8 ? 8 : BATCH_MAX;
        uint32_t kmax = MAX(MAX(hp->n_embd, hp->n_ff), (uint32_t) nq);
        struct {
                QvkBuffer **b;
                uint64_t size;
                QvkMemKind kind;
        } list[] = {
                { &b->x, cap * E * 4, QVK_MEM_DEVICE },
                { &b->xb, cap * E * 4, QVK_MEM_DEVICE },
                { &b->qkv, cap * (nq + 2 * nkv) * 4, QVK_MEM_DEVICE },
                { &b->q, cap * nq * 4, QVK_MEM_DEVICE },
                { &b->att, cap * nq * 4, QVK_MEM_DEVICE },
                { &b->o, cap * E * 4, QVK_MEM_DEVICE },
                { &b->gu, cap * 2 * F * 4, QVK_MEM_DEVICE },
                { &b->g, cap * F * 4, QVK_MEM_DEVICE },
                { &b->logits, cap * hp->n_vocab * 4, QVK_MEM_DEVICE },
                { &b->scratch, MAX(qvk_matmul_scratch_bytes(v->d, kmax, MIN(cap, 8u)), 256u), QVK_MEM_DEVICE },
                { &b->tokens, cap * 4, QVK_MEM_HOST },
        };
        for (size_t i = 0; i < ELEMENTSOF(list); i++) {
                r = qvk_buffer_new(v->d, list[i].size, list[i].kind, list[i].b);
                if (r < 0) {
                        llama_vk_batch_done(b);
                        return r;
                }
        }
        b->cap = cap;
        return 0;
}

static int record_batch(LlamaVk *v, LlamaVkSeq *const *seqs, uint32_t n) {
        Batch *b = &v->batch;
        QvkCmd *c = b->cmd;
        const LlamaHParams *hp = &v->w->hp;
        const Variant *var = &v->var[v->cur];
        uint32_t E = hp->n_embd, nq = hp->n_head * hp->head_dim, nkv = hp->n_head_kv * hp->head_dim;
        uint32_t F = hp->n_ff, nl = hp->n_layer, V = hp->n_vocab, QKV = nq + 2 * nkv;
        uint64_t nE = (uint64_t) n * E * 4;
        struct {
                uint32_t n;
                float eps;
        } pn = { E, hp->eps };
        /* Columns are bound in place when their offsets meet any device's storage-buffer offset
         * alignment (at most 256 bytes); else they go through the sequence's own buffers. */
        bool direct = (QKV * 4) % ALIGN == 0 && (nq * 4) % ALIGN == 0;
        int r;

        r = qvk_cmd_reset(c);
        if (r < 0)
                return r;
        {
                r = llama_vk_get_rows(c, v, b->tokens, n, b->x);
                if (r < 0)
                        return r;
        }
        {
                QvkBinding bd[] = { B(b->x, 0, nE), B(v->common, v->off_attn_norm[0], E * 4), B(b->xb, 0, nE) };
                r = qvk_cmd_dispatch(c, v->p_norm, bd, 3, 1u << 2, &pn, sizeof(pn), n, 1, 1);
                if (r < 0)
                        return r;
        }
        for (uint32_t l = 0; l < nl; l++) {
                const VkLayerW *L = &var->layers[l];
                QvkBuffer *wb = var->bufs[l];

                r = llama_vk_mm(c, b->scratch, wb, &L->qkv, b->xb, b->qkv, n);
                if (r < 0)
                        return r;
                /* Recorded phase by phase over the columns: their dispatches touch disjoint
                 * ranges, so that one barrier separates each phase from the next. */
                for (uint32_t j = 0; j < n && !direct; j++) {
                        r = qvk_cmd_copy(c, b->qkv, (uint64_t) j * QKV * 4, seqs[j]->qkv, 0, QKV * 4);
                        if (r < 0)
                                return r;
                }
                for (uint32_t j = 0; j < n; j++) {
                        LlamaVkSeq *s = seqs[j];
                        QvkBinding bd[] = {
                                direct ? B(b->qkv, (uint64_t) j * QKV * 4, QKV * 4) : B(s->qkv, 0, QKV * 4),
                                direct ? B(b->q, (uint64_t) j * nq * 4, nq * 4) : B(s->q, 0, nq * 4),
                                hp->qkv_bias ? B(v->common, v->off_bias[l], QKV * 4)
                                             : B(v->common, v->off_freq, hp->n_rot / 2 * 4),
                                B(v->common, v->off_freq, hp->n_rot / 2 * 4),
                                B(s->kc, l * s->kv_stride, s->kv_stride),
                                B(s->vc, l * s->kv_stride, s->kv_stride),
                                B(s->params, 0, 16),
                        };
                        uint32_t push[5] = { hp->n_head, hp->n_head_kv, hp->head_dim, hp->n_rot, hp->qkv_bias };
                        uint32_t total = hp->head_dim / 2 * (hp->n_head + 2 * hp->n_head_kv);
                        r = qvk_cmd_dispatch(c, v->p_rope, bd, 7, (1u << 1) | (1u << 4) | (1u << 5), push,
                                             sizeof(push), DIV_ROUND_UP(total, 64), 1, 1);
                        if (r < 0)
                                return r;
                }
                for (uint32_t j = 0; j < n; j++) {
                        LlamaVkSeq *s = seqs[j];
                        r = llama_vk_attn_decode(c, s, l, direct ? B(b->q, (uint64_t) j * nq * 4, nq * 4) : B(s->q, 0, nq * 4),
                                                 direct ? B(b->att, (uint64_t) j * nq * 4, nq * 4) : B(s->att, 0, nq * 4),
                                                 false, false);
                        if (r < 0)
                                return r;
                }
                for (uint32_t j = 0; j < n && !direct; j++) {
                        r = qvk_cmd_copy(c, seqs[j]->att, 0, b->att, (uint64_t) j * nq * 4, nq * 4);
                        if (r < 0)
                                return r;
                }
                r = llama_vk_mm(c, b->scratch, wb, &L->wo, b->att, b->o, n);
                if (r < 0)
                        return r;
                {
                        QvkBinding bd[] = { B(b->x, 0, nE), B(v->common, v->off_ffn_norm[l], E * 4),
                                            B(b->xb, 0, nE), B(b->o, 0, nE) };
                        r = qvk_cmd_dispatch(c, v->p_add_norm, bd, 4, (1u << 0) | (1u << 2), &pn, sizeof(pn), n, 1, 1);
                        if (r < 0)
                                return r;
                }
                r = llama_vk_mm(c, b->scratch, wb, &L->gu, b->xb, b->gu, n);
                if (r < 0)
                        return r;
                {
                        QvkBinding bd[] = { B(b->gu, 0, (uint64_t) n * 2 * F * 4), B(b->g, 0, (uint64_t) n * F * 4) };
                        uint32_t push[2] = { F, n * F }, groups = DIV_ROUND_UP(n * F, 256), gx = MIN(groups, 65535u);
                        r = qvk_cmd_dispatch(c, v->p_silu, bd, 2, 1u << 1, push, 8, gx, DIV_ROUND_UP(groups, gx), 1);
                        if (r < 0)
                                return r;
                }
                r = llama_vk_mm(c, b->scratch, wb, &L->down, b->g, b->o, n);
                if (r < 0)
                        return r;
                {
                        uint64_t off = l + 1 < nl ? v->off_attn_norm[l + 1] : v->off_out_norm;
                        QvkBinding bd[] = { B(b->x, 0, nE), B(v->common, off, E * 4), B(b->xb, 0, nE), B(b->o, 0, nE) };
                        r = qvk_cmd_dispatch(c, v->p_add_norm, bd, 4, (1u << 0) | (1u << 2), &pn, sizeof(pn), n, 1, 1);
                        if (r < 0)
                                return r;
                }
        }
        r = llama_vk_mm(c, b->scratch, var->bufs[nl], &var->output, b->xb, b->logits, n);
        if (r < 0)
                return r;
        for (uint32_t j = 0; j < n; j++) {
                r = qvk_cmd_copy(c, b->logits, (uint64_t) j * V * 4, seqs[j]->logits, 0, (uint64_t) V * 4);
                if (r < 0)
                        return r;
        }
        /* at most 256 slices of at least 1024 logits, as in record() */
        uint32_t per = MAX(1024u, ALIGN_TO(DIV_ROUND_UP(V, 256u), 256u)), groups = DIV_ROUND_UP(V, per);
        for (uint32_t pass = 0; pass < 2; pass++)
                for (uint32_t j = 0; j < n; j++) {
                        LlamaVkSeq *s = seqs[j];
                        uint32_t push[4] = { V, per, groups, pass };
                        QvkBinding bd[] = { B(s->logits, 0, (uint64_t) V * 4), B(s->part, 0, 0), B(s->result, 0, 8) };
                        r = qvk_cmd_dispatch(c, v->p_argmax, bd, 3, pass == 0 ? 1u << 1 : 1u << 2, push,
                                             sizeof(push), pass == 0 ? groups : 1, 1, 1);
                        if (r < 0)
                                return r;
                }
        return qvk_cmd_end(c);
}

int llama_vk_batch_eval(LlamaVk *v, LlamaVkSeq *const *seqs, const int32_t *tokens, size_t n,
                        int32_t *ret_argmax, float *ret_logprob) {
        Batch *b = &v->batch;
        int r;

        if (n == 0)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                if (seqs[i]->v != v || tokens[i] < 0 || (uint32_t) tokens[i] >= v->w->hp.n_vocab)
                        return -EINVAL;
                if (seqs[i]->len >= seqs[i]->n_ctx)
                        return -ENOSPC;
                for (size_t k = 0; k < i; k++)
                        if (seqs[k] == seqs[i])
                                return -EINVAL; /* one token per sequence and step */
        }

        /* the host writes each sequence's position below: no step of theirs may be queued */
        for (size_t i = 0; i < n; i++) {
                r = llama_vk_seq_settle(seqs[i]);
                if (r < 0)
                        return r;
        }
        for (size_t done = 0; done < n;) {
                uint32_t cnt = MIN(n - done, (size_t) BATCH_MAX);
                LlamaVkSeq *const *ss = seqs + done;
                bool same;

                r = batch_reserve(v, cnt);
                if (r < 0)
                        return r;
                if (!b->cmd) {
                        r = qvk_cmd_new(v->d, &b->cmd);
                        if (r < 0)
                                return r;
                        b->gen = UINT64_MAX;
                }
                same = b->gen == v->generation && b->n == cnt;
                for (uint32_t j = 0; same && j < cnt; j++)
                        same = b->ids[j] == ss[j]->id;
                if (!same) {
                        r = record_batch(v, ss, cnt);
                        if (r < 0) {
                                b->gen = UINT64_MAX;
                                return r;
                        }
                        b->gen = v->generation;
                        b->n = cnt;
                        for (uint32_t j = 0; j < cnt; j++)
                                b->ids[j] = ss[j]->id;
                }
                memcpy(qvk_buffer_map(b->tokens), tokens + done, cnt * sizeof(int32_t));
                for (uint32_t j = 0; j < cnt; j++) {
                        uint32_t *prm = qvk_buffer_map(ss[j]->params);
                        prm[0] = ss[j]->len;
                        prm[1] = 1;
                }
                r = qvk_cmd_submit(b->cmd);
                if (r < 0)
                        return r;
                r = qvk_cmd_wait(b->cmd);
                if (r < 0)
                        return r;
                for (uint32_t j = 0; j < cnt; j++) {
                        const uint32_t *res = qvk_buffer_map(ss[j]->result);
                        ss[j]->len++;
                        ss[j]->last = 0; /* its logits and argmax are parity 0's */
                        if (ret_argmax)
                                ret_argmax[done + j] = (int32_t) res[0];
                        if (ret_logprob)
                                memcpy(&ret_logprob[done + j], &res[1], sizeof(float));
                }
                done += cnt;
        }
        return 0;
}
