/* Chat prompt formats, recognised from tokenizer.chat_template by distinctive substrings (the
 * Jinja template itself is not executed). Output follows llama.cpp's llm_chat_apply_template:
 *
 *   LLAMA3   ("<|start_header_id|>"):
 *       <|start_header_id|>{role}<|end_header_id|>\n\n{content, trimmed}<|eot_id|>   per message
 *       <|start_header_id|>assistant<|end_header_id|>\n\n                          add_assistant
 *   LLAMA2   ("[INST]"): "[INST] " then system as "<<SYS>>\n{c}\n<</SYS>>\n\n" (templates without
 *       "<<SYS>>": "{c}\n"), user as "{c} [/INST]", assistant as "{c}</s>"; a user turn after an
 *       assistant turn opens with "<s>[INST] " ("[INST] " if the template lacks
 *       "bos_token + '[INST]"); contents trimmed when the template has "content.strip()".
 *   CHATML   ("<|im_start|>"): <|im_start|>{role}\n{content}<|im_end|>\n; add_assistant:
 *       <|im_start|>assistant\n
 *   ZEPHYR   ("<|user|>"): <|{role}|>\n{content}{eos}\n with eos = the model's EOS text
 *       (default "</s>"); add_assistant: <|assistant|>\n
 *   FALLBACK (anything else, or no template):
 *       "### System:\n{c}\n\n", "### User:\n{c}\n\n", "### Assistant:\n{c}\n\n" per message
 *       (other roles: "### {Role}:\n"); add_assistant: "### Assistant:\n"
 * BOS is never part of the output: the tokenizer adds it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "engine.h" /* QdChatMessage */

typedef enum QdChatFormat {
        QD_CHAT_FALLBACK,
        QD_CHAT_LLAMA3,
        QD_CHAT_LLAMA2,
        QD_CHAT_CHATML,
        QD_CHAT_ZEPHYR,
        _QD_CHAT_MAX,
} QdChatFormat;

/* Detects the format of a Jinja chat template (NULL gives FALLBACK). */
QdChatFormat qd_chat_format_detect(const char *tmpl);
const char *qd_chat_format_to_string(QdChatFormat f); /* "llama3", "llama2", "chatml", ... */

/* Renders into a newly allocated string. tmpl (may be NULL) refines the LLAMA2 variants; eos
 * (may be NULL) is the EOS token text used by ZEPHYR. -EINVAL for a message with NULL role or
 * content. */
int qd_chat_render(QdChatFormat f, const char *tmpl, const char *eos, const QdChatMessage *msgs, size_t n,
                   bool add_assistant, char **ret);
