/* Response and SSE parsing for the HTTP tests. */
#include <string.h>
#include <strings.h>

#include "http-client.h"

void response_clear(Response *r) {
        free(r->headers);
        free(r->body);
        *r = (Response) {};
}

char *response_header(const Response *r, const char *name) {
        size_t n = strlen(name);

        for (const char *l = strstr(r->headers, "\r\n"); l && l[2]; l = strstr(l + 2, "\r\n")) {
                const char *h = l + 2;
                if (strncasecmp(h, name, n) == 0 && h[n] == ':') {
                        const char *v = h + n + 1, *e = strstr(v, "\r\n");
                        while (*v == ' ')
                                v++;
                        return strndup(v, e ? (size_t) (e - v) : strlen(v));
                }
        }
        return NULL;
}

int response_parse(const char *buf, size_t size, size_t *pos, Response *ret) {
        const char *start = buf + *pos, *end = buf + size, *he;
        Response r = {};
        char *v;

        he = memmem(start, (size_t) (end - start), "\r\n\r\n", 4);
        if (!he)
                return 0;
        r.headers = strndup(start, (size_t) (he - start) + 2);
        if (!r.headers || sscanf(r.headers, "HTTP/1.1 %u", &r.status) != 1) {
                response_clear(&r);
                return -1;
        }
        const char *p = he + 4;
        if (r.status == 100) {
                r.body = strdup("");
                *pos = (size_t) (p - buf);
                *ret = r;
                return 1;
        }
        v = response_header(&r, "Transfer-Encoding");
        r.chunked = v && strcasecmp(v, "chunked") == 0;
        free(v);
        r.body = calloc(1, 1);
        if (r.chunked) {
                for (;;) {
                        const char *le = memmem(p, (size_t) (end - p), "\r\n", 2);
                        unsigned long n;
                        char *e;
                        if (!le)
                                goto incomplete;
                        n = strtoul(p, &e, 16);
                        if (e == p)
                                goto bad;
                        p = le + 2;
                        if ((size_t) (end - p) < n + 2)
                                goto incomplete;
                        if (n == 0) {
                                p += 2;
                                break;
                        }
                        r.body = realloc(r.body, r.body_size + n + 1);
                        memcpy(r.body + r.body_size, p, n);
                        r.body_size += n;
                        r.body[r.body_size] = 0;
                        p += n;
                        if (memcmp(p, "\r\n", 2) != 0)
                                goto bad;
                        p += 2;
                }
        } else {
                v = response_header(&r, "Content-Length");
                if (!v)
                        goto bad;
                size_t n = strtoul(v, NULL, 10);
                free(v);
                if ((size_t) (end - p) < n)
                        goto incomplete;
                r.body = realloc(r.body, n + 1);
                memcpy(r.body, p, n);
                r.body[n] = 0;
                r.body_size = n;
                p += n;
        }
        *pos = (size_t) (p - buf);
        *ret = r;
        return 1;
incomplete:
        response_clear(&r);
        return 0;
bad:
        response_clear(&r);
        return -1;
}

json_t *response_json(const Response *r) {
        return json_loadb(r->body, r->body_size, 0, NULL);
}

size_t sse_events(const char *body, char ***ret) {
        char **l = NULL;
        size_t n = 0;

        for (const char *p = body; p && *p;) {
                const char *e = strstr(p, "\n\n");
                if (!e)
                        break;
                if (strncmp(p, "data: ", 6) == 0) {
                        l = realloc(l, (n + 1) * sizeof(char *));
                        l[n++] = strndup(p + 6, (size_t) (e - p - 6));
                }
                p = e + 2;
        }
        *ret = l;
        return n;
}

void sse_events_free(char **ev, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(ev[i]);
        free(ev);
}
