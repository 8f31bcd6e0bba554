/* Test helper: splits raw HTTP/1.1 response bytes into responses (Content-Length or chunked)
 * and SSE events, so the tests check exactly what a client would see. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct Response {
        unsigned status;
        char *headers;                  /* the head, NUL-terminated */
        char *body;                     /* decoded (chunks joined), NUL-terminated */
        size_t body_size;
        bool chunked;
} Response;

/* Parses one response from buf[*pos...]; returns 1 and advances *pos, 0 if incomplete, -1 if
 * malformed. Responses to HEAD are not handled (none are sent). */
int response_parse(const char *buf, size_t size, size_t *pos, Response *ret);
void response_clear(Response *r);
/* Value of a header (case-insensitive name) in r->headers, newly allocated, or NULL. */
char *response_header(const Response *r, const char *name);
/* The JSON body (new reference) or NULL. */
json_t *response_json(const Response *r);
/* The "data: ..." payloads of an SSE body, in order: n events, "[DONE]" included as a string. */
size_t sse_events(const char *body, char ***ret);
void sse_events_free(char **ev, size_t n);

#define CHECK(cond)                                                                     \
        do {                                                                            \
                if (!(cond)) {                                                          \
                        fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
                        abort();                                                        \
                }                                                                       \
        } while (0)
