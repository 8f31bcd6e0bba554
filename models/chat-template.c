/* Chat prompt formats recognised from tokenizer.chat_template (see chat.h for the exact output). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "chat.h"
#include "macro.h"

static const char *const format_names[_QD_CHAT_MAX] = {
        [QD_CHAT_FALLBACK] = "fallback", [QD_CHAT_LLAMA3] = "llama3", [QD_CHAT_LLAMA2] = "llama2",
        [QD_CHAT_CHATML] = "chatml",     [QD_CHAT_ZEPHYR] = "zephyr",
};

const char *qd_chat_format_to_string(QdChatFormat f) {
        return f >= 0 && f < _QD_CHAT_MAX ? format_names[f] : NULL;
}

QdChatFormat qd_chat_format_detect(const char *tmpl) {
        if (!tmpl)
                return QD_CHAT_FALLBACK;
        /* order matters: ChatML templates may mention other markers in comments, Llama 3 first */
        if (strstr(tmpl, "<|start_header_id|>"))
                return QD_CHAT_LLAMA3;
        if (strstr(tmpl, "<|im_start|>"))
                return QD_CHAT_CHATML;
        if (strstr(tmpl, "[INST]"))
                return QD_CHAT_LLAMA2;
        if (strstr(tmpl, "<|user|>"))
                return QD_CHAT_ZEPHYR;
        return QD_CHAT_FALLBACK;
}

static void put_trimmed(FILE *f, const char *s) {
        size_t len = strlen(s);
        while (len > 0 && isspace((unsigned char)*s))
                s++, len--;
        while (len > 0 && isspace((unsigned char)s[len - 1]))
                len--;
        fwrite(s, 1, len, f);
}

static void render_llama2(FILE *f, const char *tmpl, const QdChatMessage *msgs, size_t n) {
        bool sys = !tmpl || strstr(tmpl, "<<SYS>>");
        bool space = tmpl && strstr(tmpl, "' ' + eos_token");
        bool bos_inside = !tmpl || strstr(tmpl, "bos_token + '[INST]");
        bool strip = !tmpl || strstr(tmpl, "content.strip()");
        bool inside = true;

        fputs("[INST] ", f);
        for (size_t i = 0; i < n; i++) {
                const char *role = msgs[i].role, *c = msgs[i].content;
                if (!inside) {
                        inside = true;
                        fputs(bos_inside ? "<s>[INST] " : "[INST] ", f);
                }
                if (streq(role, "system")) {
                        if (sys)
                                fputs("<<SYS>>\n", f);
                        strip ? put_trimmed(f, c) : (void)fputs(c, f);
                        fputs(sys ? "\n<</SYS>>\n\n" : "\n", f);
                } else if (streq(role, "user")) {
                        strip ? put_trimmed(f, c) : (void)fputs(c, f);
                        fputs(" [/INST]", f);
                } else {
                        if (space)
                                fputc(' ', f);
                        strip ? put_trimmed(f, c) : (void)fputs(c, f);
                        fputs(space ? " </s>" : "</s>", f);
                        inside = false;
                }
        }
}

int qd_chat_render(QdChatFormat fmt, const char *tmpl, const char *eos, const QdChatMessage *msgs, size_t n,
                   bool add_assistant, char **ret) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f;

        if (fmt < 0 || fmt >= _QD_CHAT_MAX || (n > 0 && !msgs))
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (!msgs[i].role || !msgs[i].content)
                        return -EINVAL;
        f = open_memstream(&buf, &size);
        if (!f)
                return -ENOMEM;

        switch (fmt) {
        case QD_CHAT_LLAMA3:
                for (size_t i = 0; i < n; i++) {
                        fprintf(f, "<|start_header_id|>%s<|end_header_id|>\n\n", msgs[i].role);
                        put_trimmed(f, msgs[i].content);
                        fputs("<|eot_id|>", f);
                }
                if (add_assistant)
                        fputs("<|start_header_id|>assistant<|end_header_id|>\n\n", f);
                break;
        case QD_CHAT_LLAMA2:
                render_llama2(f, tmpl, msgs, n);
                break;
        case QD_CHAT_CHATML:
                for (size_t i = 0; i < n; i++)
                        fprintf(f, "<|im_start|>%s\n%s<|im_end|>\n", msgs[i].role, msgs[i].content);
                if (add_assistant)
                        fputs("<|im_start|>assistant\n", f);
                break;
        case QD_CHAT_ZEPHYR:
                for (size_t i = 0; i < n; i++)
                        fprintf(f, "<|%s|>\n%s%s\n", msgs[i].role, msgs[i].content, eos ? eos : "</s>");
                if (add_assistant)
                        fputs("<|assistant|>\n", f);
                break;
        default:
                for (size_t i = 0; i < n; i++) {
                        const char *role = msgs[i].role;
                        fputs("### ", f);
                        if (*role) {
                                fputc(toupper((unsigned char)role[0]), f);
                                fputs(role + 1, f);
                        }
                        fprintf(f, ":\n%s\n\n", msgs[i].content);
                }
                if (add_assistant)
                        fputs("### Assistant:\n", f);
                break;
        }
        if (ferror(f)) {
                fclose(f);
                free(buf);
                return -ENOMEM;
        }
        if (fclose(f) != 0) {
                free(buf);
                return -ENOMEM;
        }
        *ret = buf;
        return 0;
}
