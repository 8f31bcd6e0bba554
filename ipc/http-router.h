/* Maps method + path to the handlers of the OpenAI (http-openai.c) and native (http-native.c)
 * endpoints; 404 for unknown paths, 405 with Allow for known paths with another method;
 * management routes need a privileged caller (403 otherwise) and are logged with its identity. */
#pragma once

#include <jansson.h>

#include "http-conn.h"

/* arg: the percent-decoded {name} segment of the path, or NULL. A handler answers through
 * http_conn_reply_*() now or later; a negative return without an answer becomes a 500. */
typedef int (*HttpHandler)(HttpConn *c, const HttpRequest *req, const char *arg);

void http_route(HttpConn *c, const HttpRequest *req);

/* Parses the body as a JSON object; on failure answers 400 and returns -EBADMSG. */
int http_request_json(HttpConn *c, const HttpRequest *req, json_t **ret);

/* A JSON string of n bytes of model output, with invalid UTF-8 replaced by U+FFFD. */
json_t *http_json_text(const char *s, size_t n);
json_t *http_model_status_json(const ModelStatus *st);

/* Endpoints. */
int http_openai_models(HttpConn *c, const HttpRequest *req, const char *arg);
int http_openai_model(HttpConn *c, const HttpRequest *req, const char *arg);
int http_openai_completions(HttpConn *c, const HttpRequest *req, const char *arg);
int http_openai_chat(HttpConn *c, const HttpRequest *req, const char *arg);
int http_native_generate(HttpConn *c, const HttpRequest *req, const char *arg);
int http_native_status(HttpConn *c, const HttpRequest *req, const char *arg);
int http_native_models(HttpConn *c, const HttpRequest *req, const char *arg);
int http_native_load(HttpConn *c, const HttpRequest *req, const char *arg);
int http_native_unload(HttpConn *c, const HttpRequest *req, const char *arg);
int http_native_tokenize(HttpConn *c, const HttpRequest *req, const char *arg);
int http_native_detokenize(HttpConn *c, const HttpRequest *req, const char *arg);
int http_native_precision(HttpConn *c, const HttpRequest *req, const char *arg);
int http_native_policy(HttpConn *c, const HttpRequest *req, const char *arg);
int http_native_quantize(HttpConn *c, const HttpRequest *req, const char *arg);
int http_native_evaluate(HttpConn *c, const HttpRequest *req, const char *arg);
int http_native_job(HttpConn *c, const HttpRequest *req, const char *arg);
int http_native_job_cancel(HttpConn *c, const HttpRequest *req, const char *arg);

/* "fp16", "int8", "int4", "auto" (the engine's names), without linking the engine. */
QdPrecision http_precision_from_string(const char *s);
const char *http_precision_to_string(QdPrecision p);
