/* Causal attention of a prompt (n > 1 tokens) over the KV cache: the flash-attention kernel on
 * tensor cores where the device runs the cooperative-matrix kernels (fp16 cache, head_dim 64 or
 * 128), else the plain kernel of the decode step with one workgroup per (head, token). */
#include <errno.h>
#include <math.h>
#include <stdio.h>

#include "llama-vulkan-internal.h"
#include "macro.h"

#define CM_ROWS 64u /* query rows (token x head of a KV head's group) per workgroup */

bool llama_vk_attn_prompt_flash(QvkDevice *d, uint32_t head_dim, bool kv_f16) {
        return kv_f16 && qvk_device_coopmat(d) && (head_dim == 64 || head_dim == 128);
}

int llama_vk_attn_prompt_record(QvkCmd *c, const LlamaVkAttn *a) {
        QvkDevice *d = qvk_cmd_device(c);
        float scale = 1.0f / sqrtf((float) a->head_dim);
        QvkPipeline *p;
        char name[48];
        int r;

        if (a->n == 0 || a->n_head_kv == 0 || a->n_head % a->n_head_kv || a->head_dim == 0 ||
            a->head_dim > 256)
                return -EINVAL;
        if (llama_vk_attn_prompt_flash(d, a->head_dim, a->kv_f16)) {
                struct {
                        uint32_t n_head, n_head_kv;
                        float scale;
                        uint32_t n;
                } push = { a->n_head, a->n_head_kv, scale, a->n };
                uint64_t rows = (uint64_t) a->n * (a->n_head / a->n_head_kv);
                QvkBinding b[] = { a->q, a->kc, a->vc, a->out, a->params };

                snprintf(name, sizeof(name), "attention_prompt_cm_h%u", a->head_dim);
                r = qvk_pipeline_get(d, name, NULL, 0, ELEMENTSOF(b), sizeof(push), &p);
                if (r < 0)
                        return r;
                if (DIV_ROUND_UP(rows, CM_ROWS) > 65535u)
                        return -E2BIG;
                return qvk_cmd_dispatch(c, p, b, ELEMENTSOF(b), 1u << 3, &push, sizeof(push),
                                        DIV_ROUND_UP(rows, CM_ROWS), a->n_head_kv, 1);
        }

        /* every key of the context in one split: the prompt's rows fill the device */
        struct {
                uint32_t n_head, n_head_kv, head_dim;
                float scale;
                uint32_t kps, n_split;
        } push = { a->n_head, a->n_head_kv, a->head_dim, scale, ALIGN_TO(a->n_ctx, 32u), 1 };
        QvkBinding b[] = { a->q, a->kc, a->vc, a->out, a->params, a->part };

        snprintf(name, sizeof(name), "attention_kv%s", a->kv_f16 ? "f16" : "f32");
        r = qvk_pipeline_get(d, name, &a->head_dim, 1, ELEMENTSOF(b), sizeof(push), &p);
        if (r < 0)
                return r;
        return qvk_cmd_dispatch(c, p, b, ELEMENTSOF(b), 1u << 3, &push, sizeof(push), a->n_head, a->n, 1);
}

int llama_vk_attn_prompt(QvkCmd *c, LlamaVkSeq *s, uint32_t l, uint32_t n) {
        const LlamaHParams *hp = &s->v->w->hp;
        uint64_t nq = (uint64_t) hp->n_head * hp->head_dim;
        LlamaVkAttn a = {
                .q = B(s->q, 0, n * nq * 4),
                .kc = B(s->kc, l * s->kv_stride, s->kv_stride),
                .vc = B(s->vc, l * s->kv_stride, s->kv_stride),
                .out = B(s->att, 0, n * nq * 4),
                .params = B(s->params, 0, 16),
                .part = B(s->part, 0, 0),
                .n_head = hp->n_head,
                .n_head_kv = hp->n_head_kv,
                .head_dim = hp->head_dim,
                .n = n,
                .n_ctx = s->n_ctx,
                .kv_f16 = s->v->kv_f16,
        };

        return llama_vk_attn_prompt_record(c, &a);
}
