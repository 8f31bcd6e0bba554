/* Chat template detection and rendering against expected prompt strings. */
#include "chat.h"
#include "formats-fixtures.h"

static const QdChatMessage conv[] = {
        {"system", "You are terse."},
        {"user", "Hi!"},
        {"assistant", "Hello."},
        {"user", " Bye "},
};

static void check_render(QdChatFormat f, const char *tmpl, const char *eos, bool add, const char *expect) {
        char *out = NULL;
        CHECK_OK(qd_chat_render(f, tmpl, eos, conv, ELEMENTSOF(conv), add, &out));
        if (!streq(out, expect))
                fprintf(stderr, "%s: got\n[%s]\nexpected\n[%s]\n", qd_chat_format_to_string(f), out, expect);
        CHECK(streq(out, expect));
        free(out);
}

int main(void) {
        static const char llama3_tmpl[] =
                "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
                "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] "
                "| trim + '<|eot_id|>' %}{{ content }}{% endfor %}";
        static const char llama2_tmpl[] =
                "{% if messages[0]['role'] == 'system' %}{% set system_message = '<<SYS>>\\n' + "
                "messages[0]['content'] | trim + '\\n<</SYS>>\\n\\n' %}{% endif %}{% for message in "
                "messages %}"
                "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' "
                "}}"
                "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% "
                "endif %}{% endfor %}";
        static const char chatml_tmpl[] = "{% for message in messages %}{{'<|im_start|>' + message['role'] "
                                          "+ '\\n' + message['content'] + "
                                          "'<|im_end|>' + '\\n'}}{% endfor %}";
        static const char zephyr_tmpl[] =
                "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\\n' + "
                "message['content'] + eos_token }}{% endif %}{% endfor %}";

        CHECK(qd_chat_format_detect(llama3_tmpl) == QD_CHAT_LLAMA3);
        CHECK(qd_chat_format_detect(llama2_tmpl) == QD_CHAT_LLAMA2);
        CHECK(qd_chat_format_detect(chatml_tmpl) == QD_CHAT_CHATML);
        CHECK(qd_chat_format_detect(zephyr_tmpl) == QD_CHAT_ZEPHYR);
        CHECK(qd_chat_format_detect("{{ messages }}") == QD_CHAT_FALLBACK);
        CHECK(qd_chat_format_detect(NULL) == QD_CHAT_FALLBACK);
        CHECK(streq(qd_chat_format_to_string(QD_CHAT_CHATML), "chatml"));

        check_render(QD_CHAT_LLAMA3, llama3_tmpl, NULL, true,
                     "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
                     "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>"
                     "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
                     "<|start_header_id|>assistant<|end_header_id|>\n\n");
        /* this Llama 2 template: <<SYS>>, bos inside history, strip, spaces around the answer */
        check_render(
                QD_CHAT_LLAMA2, llama2_tmpl, NULL, true,
                "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi! [/INST] Hello. </s><s>[INST] Bye [/INST]");
        /* without a template: the common Llama 2 variant (no spaces around the answer) */
        check_render(
                QD_CHAT_LLAMA2, NULL, NULL, false,
                "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi! [/INST]Hello.</s><s>[INST] Bye [/INST]");
        check_render(QD_CHAT_CHATML, chatml_tmpl, NULL, true,
                     "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
                     "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n Bye <|im_end|>\n"
                     "<|im_start|>assistant\n");
        check_render(QD_CHAT_ZEPHYR, zephyr_tmpl, "</s>", true,
                     "<|system|>\nYou are terse.</s>\n<|user|>\nHi!</s>\n<|assistant|>\nHello.</s>\n"
                     "<|user|>\n Bye </s>\n<|assistant|>\n");
        check_render(QD_CHAT_FALLBACK, NULL, NULL, true,
                     "### System:\nYou are terse.\n\n### User:\nHi!\n\n### Assistant:\nHello.\n\n"
                     "### User:\n Bye \n\n### Assistant:\n");

        char *out = NULL;
        QdChatMessage bad = {"user", NULL};
        CHECK(qd_chat_render(QD_CHAT_CHATML, NULL, NULL, &bad, 1, true, &out) == -EINVAL && !out);
        CHECK_OK(qd_chat_render(QD_CHAT_CHATML, NULL, NULL, NULL, 0, true, &out));
        CHECK(streq(out, "<|im_start|>assistant\n"));
        free(out);
        printf("chat tests passed\n");
        return 0;
}
