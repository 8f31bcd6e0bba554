/* Fuzz target for the HTTP + JSON request path: the input's first byte picks how the rest is cut
 * into reads, whether the peer may manage, and when the fake backend produces tokens; the rest
 * is fed to one connection. Any crash, leak or sanitizer report is a bug. */
#include <string.h>

#include "http-conn.h"
#include "http-fake.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Sink {
        size_t total, fail_after;
        HttpConn *conn;
        bool detached;
} Sink;

/* Counts the answer's bytes; past fail_after the peer "resets" and the transport lets go of the
 * connection from inside the write, as http-server.c does on EPIPE. */
static int sink_write(void *userdata, const void *d, size_t n) {
        Sink *s = userdata;

        s->total += n;
        if (s->total > s->fail_after && !s->detached) {
                s->detached = true;
                http_conn_detach(s->conn);
                return -EPIPE;
        }
        return 0;
}

static void sink_close(void *userdata) {
}

static const HttpConnOps sink_ops = {
        .write = sink_write,
        .close = sink_close,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Fake fake = {};
        HttpContext ctx = {
                .backend = &fake_backend,
                .backend_ctx = &fake,
                .limits = HTTP_LIMITS_DEFAULT,
                .daemon_uid = 1,
        };
        HttpConn *c = NULL;
        Sink sink = { .fail_after = SIZE_MAX };
        size_t chunk;
        uint8_t mode;

        if (size < 1)
                return 0;
        mode = data[0];
        data++, size--;
        ctx.limits.max_body_bytes = 64 * 1024;
        ctx.limits.max_header_bytes = 8 * 1024;
        chunk = (mode & 0x0f) == 0 ? size : (size_t) (mode & 0x0f) * 7;
        if (chunk == 0)
                chunk = 1;
        if ((mode & 0x0f) == 0x0e)
                sink.fail_after = 150;
        if (http_conn_new(&ctx, &sink_ops, &sink, true, (mode & 0x10) ? 0 : 1000, 1, &c) < 0)
                return 0;
        /* Like http-server.c, hold no reference of our own: after a detach inside a write the
         * connection may be gone, and nothing here touches it again. */
        sink.conn = c;
        for (size_t off = 0; off < size && !sink.detached; off += chunk) {
                http_conn_feed(c, data + off, MIN(chunk, size - off));
                if (mode & 0x20)
                        fake_pump(&fake);
        }
        /* Let streams run a little, maybe time out, then the peer leaves (or waits for all). */
        for (int i = 0; i < 4; i++)
                fake_pump(&fake);
        if ((mode & 0x40) && !sink.detached)
                http_conn_timeout(c);
        if (mode & 0x80)
                while (fake_pump(&fake) > 0)
                        ;
        if (!sink.detached)
                http_conn_detach(c);
        fake_finish_all(&fake, "cancelled");
        return 0;
}
