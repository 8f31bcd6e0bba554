/* Tokenizers built from GGUF metadata (tokenizer.ggml.*), as llama.cpp does them:
 *   "llama": SentencePiece-style — spaces become U+2581, a U+2581 is prepended
 *            (tokenizer.ggml.add_space_prefix, default true), symbols merge greedily by the
 *            score of the merged piece, unknown bytes fall back to <0xXX> tokens.
 *   "gpt2":  byte-level BPE — the text is split by the pre-tokenizer regex named by
 *            tokenizer.ggml.pre ("llama-bpe"/"llama3", "qwen2", "gpt2"/"gpt-2", "smollm"/"starcoder",
 *            "default"/absent; the regexes of llama.cpp's llama-vocab.cpp, run by
 *            PCRE2 with UTF+UCP), bytes are mapped to GPT-2's printable code points, and pairs
 *            merge by the rank of tokenizer.ggml.merges.
 * Special tokens are split out of the text first, as llama.cpp does: user-defined tokens
 * (token_type 4) always, control tokens (token_type 3) only when parse_special is set; longest
 * match first. A tokenizer is immutable after creation and thread-safe. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

typedef struct QdTokenizer QdTokenizer;

typedef enum QdTokenizerKind {
        QD_TOKENIZER_SPM,
        QD_TOKENIZER_BPE,
} QdTokenizerKind;

/* token_type values of tokenizer.ggml.token_type (llama.cpp's llama_token_type) */
typedef enum QdTokenType {
        QD_TOKEN_TYPE_UNDEFINED = 0,
        QD_TOKEN_TYPE_NORMAL = 1,
        QD_TOKEN_TYPE_UNKNOWN = 2,
        QD_TOKEN_TYPE_CONTROL = 3,
        QD_TOKEN_TYPE_USER_DEFINED = 4,
        QD_TOKEN_TYPE_UNUSED = 5,
        QD_TOKEN_TYPE_BYTE = 6,
} QdTokenType;

/* -EBADMSG with a message in *ret_error (may be NULL) for missing/inconsistent metadata,
 * -EOPNOTSUPP for another tokenizer model or pre-tokenizer name. The tokenizer copies what it
 * needs: g may be closed afterwards. */
int qd_tokenizer_new_from_gguf(const Gguf *g, QdTokenizer **ret, char **ret_error);
QdTokenizer *qd_tokenizer_free(QdTokenizer *t);

QdTokenizerKind qd_tokenizer_kind(const QdTokenizer *t);
uint32_t qd_tokenizer_n_vocab(const QdTokenizer *t);
/* Special ids, -1 when the model has none. */
int32_t qd_tokenizer_bos(const QdTokenizer *t);
int32_t qd_tokenizer_eos(const QdTokenizer *t);
int32_t qd_tokenizer_eot(const QdTokenizer *t);
int32_t qd_tokenizer_unk(const QdTokenizer *t);
int32_t qd_tokenizer_pad(const QdTokenizer *t);
/* tokenizer.ggml.add_bos_token (default: true for llama, false for gpt2) */
bool qd_tokenizer_add_bos(const QdTokenizer *t);
/* End of generation: eos, eot, or a control token whose text is one of <|eot_id|>, <|im_end|>,
 * <|end|>, <|endoftext|>, <end_of_turn>, </s>, <|eom_id|>. */
bool qd_tokenizer_is_eog(const QdTokenizer *t, int32_t token);

/* The vocabulary entry as stored in the file (NULL for a bad id). */
const char *qd_tokenizer_token_text(const QdTokenizer *t, int32_t token);
QdTokenType qd_tokenizer_token_type(const QdTokenizer *t, int32_t token);
/* Id of the exact vocabulary string, or -ENOENT. */
int32_t qd_tokenizer_find(const QdTokenizer *t, const char *text, size_t len);

/* Encodes text (len bytes, need not be NUL-terminated) into a newly allocated array. add_bos
 * prepends BOS when the model has one (the caller decides; qd_tokenizer_add_bos() says what the
 * model wants). parse_special: control token texts in the input become those tokens; otherwise
 * they are encoded as plain text. SPM prepends the U+2581 to the start of the text and after
 * every special token (as llama.cpp). */
int qd_tokenizer_tokenize(const QdTokenizer *t, const char *text, size_t len, bool add_bos,
                          bool parse_special, int32_t **ret_tokens, size_t *ret_n);

/* Raw bytes of one token (may be part of a UTF-8 character; not NUL-terminated): SPM turns
 * U+2581 into ' ' and <0xXX> into the byte, BPE maps code points back to bytes. Control tokens
 * give their text when special is true, else nothing. Returns the length, or -ENOBUFS when size
 * is too small (nothing written), -EINVAL for a bad id. */
int qd_tokenizer_token_piece(const QdTokenizer *t, int32_t token, bool special, char *buf, size_t size);
/* Decodes tokens into a newly allocated NUL-terminated string. skip_special drops control tokens
 * (BOS/EOS...). For SPM with add_space_prefix, the space that starts the first text token (the
 * one the encoder prepended) is dropped, as llama.cpp does. */
int qd_tokenizer_detokenize(const QdTokenizer *t, const int32_t *tokens, size_t n, bool skip_special,
                            char **ret, size_t *ret_len);

/* The text stream of models/engine.h (qd_text_stream_push/flush/free) over a tokenizer; the
 * engine's qd_text_stream_new(model, ...) wraps this. t must outlive the stream. Stop strings are
 * copied; empty ones are ignored. Control tokens produce no text. */
typedef struct QdTextStream QdTextStream;
int qd_text_stream_new_tokenizer(const QdTokenizer *t, char *const *stop, size_t n_stop, QdTextStream **ret);
