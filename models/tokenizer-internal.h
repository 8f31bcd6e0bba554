/* Internals shared by tokenizer.c, tokenizer-spm.c, tokenizer-bpe.c and text-stream.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* Growable token array. */
typedef struct TokenVec {
        int32_t *v;
        size_t n, alloc;
} TokenVec;

int token_vec_push(TokenVec *t, int32_t token);

typedef struct MergeEntry {
        uint64_t key; /* left << 32 | right; 0 = empty slot (ids are < 2^31, key 0 is (0,0)) */
        int32_t rank;
        int32_t merged;
        bool used;
} MergeEntry;

struct QdTokenizer {
        QdTokenizerKind kind;
        uint32_t n_vocab;
        char **text; /* NUL-terminated vocabulary strings (in textbuf) */
        uint32_t *text_len;
        char *textbuf;
        float *scores;
        uint8_t *types;
        int32_t *hash; /* open addressing over text: token id or -1 */
        size_t hash_mask;

        int32_t bos, eos, eot, eom, unk, pad;
        bool add_bos, add_space_prefix;
        bool *eog;

        /* special tokens (control/user-defined), by first byte, longest first */
        int32_t *special;
        size_t special_start[257];

        /* SPM */
        int32_t byte_token[256];

        /* BPE */
        MergeEntry *merges;
        size_t merges_mask;
        void *regex[4]; /* pcre2_code_8 * */
        size_t n_regex;
        bool ignore_merges;
        uint32_t byte_to_cp[256];
        int16_t cp_to_byte[324]; /* inverse of byte_to_cp, -1 elsewhere */
};

uint64_t tokenizer_hash_bytes(const char *s, size_t len);
/* Token id of the exact text, or -1. */
int32_t tokenizer_lookup(const QdTokenizer *t, const char *s, size_t len);
/* Length of the UTF-8 sequence introduced by the byte (1 for invalid lead bytes). */
size_t utf8_len(uint8_t c);

int tokenizer_spm_init(QdTokenizer *t, char **ret_error);
int tokenizer_spm_encode(const QdTokenizer *t, const char *text, size_t len, TokenVec *out);
int tokenizer_bpe_init(QdTokenizer *t, const Gguf *g, char **ret_error);
void tokenizer_bpe_done(QdTokenizer *t);
int tokenizer_bpe_encode(const QdTokenizer *t, const char *text, size_t len, TokenVec *out);
/* Appends the bytes of a BPE token text (GPT-2 code points mapped back to bytes). */
size_t tokenizer_bpe_decode(const QdTokenizer *t, const char *text, size_t len, char *out);
