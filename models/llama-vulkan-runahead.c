/* The decode step of one sequence in two parities, and the greedy run-ahead: while the host
 * hands the caller step t's argmax, the GPU already runs step t + 1 on that argmax (read from
 * step t's result buffer, never seen by the host first), so that the queue does not idle for
 * the host's round trip. A step queued ahead is used when the caller then asks for exactly its
 * token, and discarded otherwise (its KV entry lies past the sequence's length and is
 * overwritten by the next step).
 *
 * Ordering: every recording opens with a barrier from compute and transfer writes to all
 * reads and writes (qvk_cmd_new/reset), whose first scope holds the earlier submissions, so
 * step t + 1 reads the token, KV cache and scratch buffers only after step t wrote them and
 * overwrites the shared scratch only after step t read it. Host writes of a parity's position
 * happen after its previous submission finished and before its next vkQueueSubmit (which makes
 * them visible); the host reads a parity's argmax and logits after its fence. */
#include <errno.h>

#include "llama-vulkan-internal.h"
#include "macro.h"

QvkBuffer *llama_vk_seq_io(LlamaVkSeq *s, uint32_t p, QvkBuffer **ret_logits, QvkBuffer **ret_result) {
        if (ret_logits)
                *ret_logits = p ? s->logits1 : s->logits;
        if (ret_result)
                *ret_result = p ? s->result1 : s->result;
        return p ? s->params1 : s->params;
}

void llama_vk_seq_set_runahead(LlamaVkSeq *s, bool on) {
        /* a step already queued ahead stays: the next llama_vk_seq_eval() uses or discards it */
        s->runahead = on && !s->v->no_runahead;
}

int llama_vk_seq_settle(LlamaVkSeq *s) {
        int p = s->spec;

        if (p < 0)
                return 0;
        s->spec = -1;
        return qvk_cmd_wait(s->cmd_dec[p]);
}

/* Records parity p's decode step where the weights (or the recording's settings) changed:
 * record() binds s->tokens, params, logits and result, here parity p's and, as its token, the
 * argmax of parity 1 - p. */
static int ensure_recorded(LlamaVkSeq *s, uint32_t p) {
        QvkBuffer *saved[4] = { s->tokens, s->params, s->logits, s->result };
        int r;

        if (!s->cmd_dec[p]) {
                r = qvk_cmd_new(s->v->d, &s->cmd_dec[p]);
                if (r < 0)
                        return r;
                s->gen_dec[p] = UINT64_MAX;
        }
        if (s->gen_dec[p] == s->v->generation)
                return 0;
        QvkBuffer *params, *logits, *result, *tokens;
        params = llama_vk_seq_io(s, p, &logits, &result);
        (void) llama_vk_seq_io(s, !p, NULL, &tokens);
        s->tokens = tokens, s->params = params, s->logits = logits, s->result = result;
        r = llama_vk_seq_record(s, s->cmd_dec[p], 1);
        s->tokens = saved[0], s->params = saved[1], s->logits = saved[2], s->result = saved[3];
        s->gen_dec[p] = r < 0 ? UINT64_MAX : s->v->generation;
        return r;
}

/* Queues parity p's step at position pos (its token already in place). */
static int submit(LlamaVkSeq *s, uint32_t p, uint32_t pos) {
        uint32_t *prm;
        int r;

        if ((r = ensure_recorded(s, p)) < 0 || (r = qvk_cmd_wait(s->cmd_dec[p])) < 0)
                return r;
        prm = qvk_buffer_map(llama_vk_seq_io(s, p, NULL, NULL));
        prm[0] = pos;
        prm[1] = 1;
        return qvk_cmd_submit(s->cmd_dec[p]);
}

int llama_vk_seq_decode(LlamaVkSeq *s, int32_t token, bool ahead) {
        QvkBuffer *res;
        int p, r;

        ahead = ahead && s->runahead && !s->profile;
        if (s->spec >= 0 && s->spec_pos == s->len && s->spec_token == token &&
            s->gen_dec[s->spec] == s->v->generation) {
                p = s->spec; /* the step the caller asks for runs already */
                s->spec = -1;
        } else {
                if ((r = llama_vk_seq_settle(s)) < 0)
                        return r;
                /* the token goes where parity p reads it: the other parity's argmax, which no
                 * queued step writes now */
                p = s->runahead ? !s->last : 0;
                (void) llama_vk_seq_io(s, !p, NULL, &res);
                *(int32_t *) qvk_buffer_map(res) = token;
                if ((r = submit(s, p, s->len)) < 0)
                        return r;
        }
        /* the next step behind it, on its argmax; not where it would not fit (nor where it
         * failed: the caller's step is unaffected, the next one runs as usual) */
        if (ahead && s->len + 1 < s->n_ctx && submit(s, !p, s->len + 1) >= 0) {
                s->spec = !p;
                s->spec_pos = s->len + 1;
        }
        r = qvk_cmd_wait(s->cmd_dec[p]);
        if (r < 0) {
                (void) llama_vk_seq_settle(s);
                return r;
        }
        (void) llama_vk_seq_io(s, p, NULL, &res);
        s->spec_token = *(const int32_t *) qvk_buffer_map(res);
        s->last = p;
        s->len++;
        return 0;
}
