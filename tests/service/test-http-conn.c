/* Unit tests of the HTTP request path without sockets: bytes in, response bytes out, against
 * the fake backend. Covers framing, limits, routing, errors, auth, and both OpenAI endpoints
 * with and without streaming. */
#include <string.h>

#include "http-client.h"
#include "http-conn.h"
#include "http-fake.h"

typedef struct Peer {
        char *out;
        size_t out_size, pos;
        bool closed;
        HttpConnState state;
        bool reading;
        HttpConn *conn;
} Peer;

static int peer_write(void *userdata, const void *data, size_t n) {
        Peer *p = userdata;

        CHECK(!p->closed);
        p->out = realloc(p->out, p->out_size + n + 1);
        memcpy(p->out + p->out_size, data, n);
        p->out_size += n;
        p->out[p->out_size] = 0;
        return 0;
}

static void peer_close(void *userdata) {
        ((Peer *) userdata)->closed = true;
}

static void peer_state(void *userdata, HttpConnState st) {
        ((Peer *) userdata)->state = st;
}

static void peer_reading(void *userdata, bool on) {
        ((Peer *) userdata)->reading = on;
}

static const HttpConnOps peer_ops = {
        .write = peer_write,
        .close = peer_close,
        .state_changed = peer_state,
        .set_reading = peer_reading,
};

static Fake fake;
static HttpContext ctx;

static void peer_open(Peer *p, uid_t uid) {
        *p = (Peer) { .reading = true };
        CHECK(http_conn_new(&ctx, &peer_ops, p, true, uid, 4242, &p->conn) == 0);
}

static void peer_end(Peer *p) {
        http_conn_detach(p->conn);
        fake_finish_all(&fake, "cancelled");
        free(p->out);
}

static void send_str(Peer *p, const char *s) {
        http_conn_feed(p->conn, s, strlen(s));
}

static void send_bytewise(Peer *p, const char *s) {
        for (; *s; s++)
                http_conn_feed(p->conn, s, 1);
}

static void send_post(Peer *p, const char *path, const char *body) {
        char *req;
        CHECK(asprintf(&req, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             "Content-Length: %zu\r\n\r\n%s", path, strlen(body), body) > 0);
        send_str(p, req);
        free(req);
}

/* Runs the fake until no request is live, then returns the next response. */
static void next_response(Peer *p, Response *r) {
        while (fake_pump(&fake) > 0)
                ;
        CHECK(response_parse(p->out, p->out_size, &p->pos, r) == 1);
}

static json_t *next_json(Peer *p, unsigned status) {
        Response r;
        next_response(p, &r);
        if (r.status != status)
                fprintf(stderr, "got %u, want %u: %s\n", r.status, status, r.body);
        CHECK(r.status == status);
        json_t *j = response_json(&r);
        CHECK(j);
        response_clear(&r);
        return j;
}

static void check_error(Peer *p, unsigned status, const char *code) {
        json_t *j = next_json(p, status);
        json_t *e = json_object_get(j, "error");
        CHECK(json_is_string(json_object_get(e, "message")));
        CHECK(json_is_string(json_object_get(e, "type")));
        CHECK(strcmp(json_string_value(json_object_get(e, "code")), code) == 0);
        json_decref(j);
}

static void test_models_and_pipelining(void) {
        Peer p;
        json_t *j;

        peer_open(&p, 1000);
        /* Two requests in one write; answered in order, one at a time. */
        send_str(&p, "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\nGET /api/models?x=1 HTTP/1.1\r\nHost: x\r\n\r\n");
        j = next_json(&p, 200);
        CHECK(strcmp(json_string_value(json_object_get(j, "object")), "list") == 0);
        CHECK(strcmp(json_string_value(json_object_get(json_array_get(json_object_get(j, "data"), 0), "id")), "tiny") == 0);
        json_decref(j);
        j = next_json(&p, 200);
        json_t *m = json_array_get(json_object_get(j, "models"), 0);
        CHECK(strcmp(json_string_value(json_object_get(m, "precision")), "int8") == 0);
        CHECK(strcmp(json_string_value(json_object_get(m, "pinned")), "auto") == 0);
        json_decref(j);
        CHECK(!p.closed && p.state == HTTP_CONN_IDLE);

        /* Byte by byte gives the same. */
        send_bytewise(&p, "GET /v1/models/tiny HTTP/1.1\r\n\r\n");
        j = next_json(&p, 200);
        CHECK(strcmp(json_string_value(json_object_get(j, "id")), "tiny") == 0);
        json_decref(j);
        send_str(&p, "GET /v1/models/nope HTTP/1.1\r\n\r\n");
        check_error(&p, 404, "model_not_found");
        send_str(&p, "GET /api/status HTTP/1.1\r\n\r\n");
        j = next_json(&p, 200);
        CHECK(json_is_string(json_object_get(j, "version")));
        json_decref(j);
        send_str(&p, "GET /api/policy HTTP/1.1\r\n\r\n");
        j = next_json(&p, 200);
        CHECK(json_is_false(json_object_get(j, "available")));
        json_decref(j);
        peer_end(&p);
}

static void test_errors(void) {
        Peer p;
        Response r;
        char *allow;

        peer_open(&p, 1000);
        send_str(&p, "GET /nope HTTP/1.1\r\n\r\n");
        check_error(&p, 404, "not_found");
        send_str(&p, "GET /v1/chat/completions HTTP/1.1\r\n\r\n");
        next_response(&p, &r);
        CHECK(r.status == 405);
        allow = response_header(&r, "Allow");
        CHECK(allow && strcmp(allow, "POST") == 0);
        free(allow);
        response_clear(&r);
        send_post(&p, "/v1/completions", "{\"model\": \"tiny\", \"prompt\": ");
        check_error(&p, 400, "invalid_json");
        send_post(&p, "/v1/completions", "[1,2]");
        check_error(&p, 400, "invalid_json");
        send_post(&p, "/v1/completions", "{\"model\": \"tiny\", \"prompt\": 5}");
        check_error(&p, 400, "invalid_value");
        send_post(&p, "/v1/completions", "{\"model\": \"tiny\", \"prompt\": \"a\", \"temperature\": 9}");
        check_error(&p, 400, "invalid_value");
        send_post(&p, "/v1/completions", "{\"model\": \"other\", \"prompt\": \"a\"}");
        check_error(&p, 404, "model_not_found");
        send_post(&p, "/v1/chat/completions", "{\"model\": \"tiny\", \"messages\": []}");
        check_error(&p, 400, "invalid_value");
        send_post(&p, "/v1/chat/completions", "{\"model\": \"tiny\", \"messages\": [{\"role\": \"user\", \"content\": 3}]}");
        check_error(&p, 400, "invalid_value");
        send_post(&p, "/api/detokenize", "{\"model\": \"tiny\", \"tokens\": [1, -4]}");
        check_error(&p, 400, "invalid_value");
        send_post(&p, "/api/tokenize", "{\"model\": \"tiny\"}");
        check_error(&p, 400, "missing_parameter");
        send_str(&p, "GET /api/models/%zz/precision HTTP/1.1\r\n\r\n");
        next_response(&p, &r);
        CHECK(r.status == 405);
        response_clear(&r);
        CHECK(!p.closed);

        /* Queue full: "busy" at once. */
        fake.max_live = 1;
        send_post(&p, "/v1/completions", "{\"model\": \"tiny\", \"prompt\": \"a b\", \"max_tokens\": 2}");
        Peer q;
        peer_open(&q, 1000);
        send_post(&q, "/v1/completions", "{\"model\": \"tiny\", \"prompt\": \"a\"}");
        CHECK(response_parse(q.out, q.out_size, &q.pos, &r) == 1);
        CHECK(r.status == 503);
        response_clear(&r);
        fake.max_live = 0;
        json_decref(next_json(&p, 200));
        peer_end(&q);

        /* Malformed request line: 400 and the connection closes. */
        send_str(&p, "GET /\x01 HTTP/1.1\r\n\r\n");
        next_response(&p, &r);
        CHECK(r.status == 400);
        response_clear(&r);
        CHECK(p.closed);
        peer_end(&p);
}

static void test_limits(void) {
        Peer p;
        Response r;
        char *big;

        /* Content-Length over the limit: 413 before the body is read. */
        peer_open(&p, 1000);
        send_str(&p, "POST /v1/completions HTTP/1.1\r\nContent-Length: 2000\r\n\r\n");
        check_error(&p, 413, "request_too_large");
        CHECK(p.closed);
        peer_end(&p);

        /* Chunked body growing over the limit. */
        peer_open(&p, 1000);
        big = malloc(1200);
        memset(big, 'a', 1199);
        big[1199] = 0;
        send_str(&p, "POST /v1/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4af\r\n");
        send_str(&p, big);
        send_str(&p, "\r\n0\r\n\r\n");
        check_error(&p, 413, "request_too_large");
        peer_end(&p);

        /* Headers over the limit. */
        peer_open(&p, 1000);
        send_str(&p, "GET /v1/models HTTP/1.1\r\nX-Long: ");
        send_str(&p, big);
        send_str(&p, "\r\n\r\n");
        check_error(&p, 431, "headers_too_large");
        CHECK(p.closed);
        peer_end(&p);
        free(big);

        /* Expect: 100-continue gets its interim answer, then the real one. */
        peer_open(&p, 1000);
        send_str(&p, "POST /api/tokenize HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 28\r\n\r\n");
        CHECK(response_parse(p.out, p.out_size, &p.pos, &r) == 1 && r.status == 100);
        response_clear(&r);
        send_str(&p, "{\"model\":\"tiny\",\"text\":\"hi\"}");
        json_t *j = next_json(&p, 200);
        CHECK(json_array_size(json_object_get(j, "tokens")) == 3);
        CHECK(json_integer_value(json_array_get(json_object_get(j, "tokens"), 1)) == 'h');
        json_decref(j);

        /* Chunked request body, decoded. */
        send_str(&p, "POST /api/detokenize HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "10\r\n{\"model\":\"tiny\",\r\n13\r\n\"tokens\":[104,105]}\r\n0\r\n\r\n");
        j = next_json(&p, 200);
        CHECK(strcmp(json_string_value(json_object_get(j, "text")), "hi") == 0);
        json_decref(j);

        /* A request that does not complete in time: 408 and closed; an idle one is closed. */
        send_str(&p, "GET /v1/mod");
        CHECK(p.state == HTTP_CONN_READING);
        http_conn_timeout(p.conn);
        check_error(&p, 408, "timeout");
        CHECK(p.closed);
        peer_end(&p);
        peer_open(&p, 1000);
        http_conn_timeout(p.conn);
        CHECK(p.closed && p.out_size == 0);
        peer_end(&p);

        /* HTTP/1.0 without keep-alive: closed after the answer. */
        peer_open(&p, 1000);
        send_str(&p, "GET /v1/models HTTP/1.0\r\n\r\n");
        json_decref(next_json(&p, 200));
        CHECK(p.closed);
        peer_end(&p);
}

static void test_management(void) {
        Peer p;
        json_t *j;

        /* uid 1000 is neither root nor the daemon's uid (ctx.daemon_uid = 999). */
        peer_open(&p, 1000);
        send_post(&p, "/api/models/load", "{\"path\": \"/models/x.gguf\"}");
        check_error(&p, 403, "forbidden");
        send_post(&p, "/api/models/tiny/precision", "{\"precision\": \"int4\"}");
        check_error(&p, 403, "forbidden");
        CHECK(fake.n_loaded == 0);
        peer_end(&p);

        peer_open(&p, 999);
        send_post(&p, "/api/models/load", "{\"path\": \"/models/x.gguf\", \"name\": \"x\", \"precision\": \"int8\"}");
        j = next_json(&p, 200);
        CHECK(strcmp(json_string_value(json_object_get(j, "name")), "x") == 0);
        json_decref(j);
        CHECK(fake.n_loaded == 1);
        send_post(&p, "/api/models/load", "{\"path\": \"/etc/passwd\"}");
        check_error(&p, 403, "forbidden");
        send_post(&p, "/api/models/load", "{\"path\": \"/models/x.gguf\", \"precision\": \"int3\"}");
        check_error(&p, 400, "invalid_value");
        send_post(&p, "/api/models/t%69ny/precision", "{\"precision\": \"int4\"}");
        j = next_json(&p, 200);
        CHECK(strcmp(json_string_value(json_object_get(j, "model")), "tiny") == 0);
        json_decref(j);
        CHECK(strcmp(fake.precision, "2") == 0);
        send_post(&p, "/api/models/unload", "{\"name\": \"nope\"}");
        check_error(&p, 404, "not_found");
        send_post(&p, "/api/models/unload", "{\"name\": \"tiny\"}");
        json_decref(next_json(&p, 200));
        peer_end(&p);

        peer_open(&p, 0);
        send_post(&p, "/api/models/tiny/precision", "{\"precision\": \"auto\"}");
        json_decref(next_json(&p, 200));
        peer_end(&p);
}

static void test_completions(void) {
        Peer p;
        json_t *j, *c;

        peer_open(&p, 1000);
        send_post(&p, "/v1/completions",
                  "{\"model\": \"tiny\", \"prompt\": \"one two three\", \"max_tokens\": 4, \"logprobs\": 1, \"seed\": 5}");
        j = next_json(&p, 200);
        c = json_array_get(json_object_get(j, "choices"), 0);
        CHECK(strcmp(json_string_value(json_object_get(c, "text")), "one two three one ") == 0);
        CHECK(strcmp(json_string_value(json_object_get(c, "finish_reason")), "length") == 0);
        CHECK(json_array_size(json_object_get(json_object_get(c, "logprobs"), "tokens")) == 4);
        CHECK(json_integer_value(json_array_get(json_object_get(json_object_get(c, "logprobs"), "text_offset"), 1)) == 4);
        CHECK(json_integer_value(json_object_get(json_object_get(j, "usage"), "total_tokens")) == 7);
        CHECK(strcmp(json_string_value(json_object_get(j, "object")), "text_completion") == 0);
        CHECK(strncmp(json_string_value(json_object_get(j, "id")), "cmpl-", 5) == 0);
        json_decref(j);

        /* Stop string: ends with "stop" before it. */
        send_post(&p, "/v1/completions", "{\"model\": \"tiny\", \"prompt\": [\"a b c\"], \"stop\": [\"c\"]}");
        j = next_json(&p, 200);
        c = json_array_get(json_object_get(j, "choices"), 0);
        CHECK(strcmp(json_string_value(json_object_get(c, "text")), "a b ") == 0);
        CHECK(strcmp(json_string_value(json_object_get(c, "finish_reason")), "stop") == 0);
        CHECK(json_is_null(json_object_get(c, "logprobs")));
        json_decref(j);

        /* The backend ends the request inside generate(): still one complete answer each. */
        send_post(&p, "/v1/completions", "{\"model\": \"tiny\", \"prompt\": \"!now x\"}");
        j = next_json(&p, 200);
        c = json_array_get(json_object_get(j, "choices"), 0);
        CHECK(strcmp(json_string_value(json_object_get(c, "text")), "") == 0);
        CHECK(strcmp(json_string_value(json_object_get(c, "finish_reason")), "stop") == 0);
        json_decref(j);
        send_post(&p, "/v1/chat/completions", "{\"model\": \"tiny\", \"stream\": true, \"messages\": [{\"role\": \"user\", \"content\": \"!now\"}]}");
        Response sr;
        char **ev;
        next_response(&p, &sr);
        size_t n = sse_events(sr.body, &ev);
        CHECK(sr.status == 200 && n == 3 && strcmp(ev[2], "[DONE]") == 0);
        CHECK(strstr(ev[0], "\"role\":\"assistant\"") && strstr(ev[1], "\"finish_reason\":\"stop\""));
        sse_events_free(ev, n);
        response_clear(&sr);

        /* Chat, whole answer. */
        send_post(&p, "/v1/chat/completions",
                  "{\"model\": \"tiny\", \"max_tokens\": 2, \"logprobs\": true, \"messages\": ["
                  "{\"role\": \"system\", \"content\": \"be brief\"},"
                  "{\"role\": \"user\", \"content\": [{\"type\": \"text\", \"text\": \"hello \"}, {\"type\": \"text\", \"text\": \"world\"}]}]}");
        j = next_json(&p, 200);
        c = json_array_get(json_object_get(j, "choices"), 0);
        CHECK(strcmp(json_string_value(json_object_get(json_object_get(c, "message"), "role")), "assistant") == 0);
        CHECK(strcmp(json_string_value(json_object_get(json_object_get(c, "message"), "content")), "hello world ") == 0);
        CHECK(json_array_size(json_object_get(json_object_get(c, "logprobs"), "content")) == 2);
        CHECK(strcmp(json_string_value(json_object_get(j, "object")), "chat.completion") == 0);
        json_decref(j);
        peer_end(&p);
}

static void test_streaming(void) {
        Peer p;
        Response r;
        char **ev;
        size_t n;
        json_t *j;

        peer_open(&p, 1000);
        send_post(&p, "/v1/chat/completions",
                  "{\"model\": \"tiny\", \"stream\": true, \"stream_options\": {\"include_usage\": true},"
                  " \"max_tokens\": 3, \"messages\": [{\"role\": \"user\", \"content\": \"x y\"}]}");
        next_response(&p, &r);
        CHECK(r.status == 200 && r.chunked);
        char *ct = response_header(&r, "Content-Type");
        CHECK(strcmp(ct, "text/event-stream") == 0);
        free(ct);
        n = sse_events(r.body, &ev);
        /* role, 3 contents, finish, usage, [DONE] */
        CHECK(n == 7);
        j = json_loads(ev[0], 0, NULL);
        CHECK(strcmp(json_string_value(json_object_get(json_object_get(json_array_get(json_object_get(j, "choices"), 0), "delta"), "role")), "assistant") == 0);
        json_decref(j);
        const char *want[] = { "x ", "y ", "x " };
        for (size_t i = 0; i < 3; i++) {
                j = json_loads(ev[1 + i], 0, NULL);
                CHECK(strcmp(json_string_value(json_object_get(j, "object")), "chat.completion.chunk") == 0);
                CHECK(strcmp(json_string_value(json_object_get(json_object_get(json_array_get(json_object_get(j, "choices"), 0), "delta"), "content")), want[i]) == 0);
                json_decref(j);
        }
        j = json_loads(ev[4], 0, NULL);
        CHECK(strcmp(json_string_value(json_object_get(json_array_get(json_object_get(j, "choices"), 0), "finish_reason")), "length") == 0);
        json_decref(j);
        j = json_loads(ev[5], 0, NULL);
        CHECK(json_array_size(json_object_get(j, "choices")) == 0);
        CHECK(json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens")) == 3);
        json_decref(j);
        CHECK(strcmp(ev[6], "[DONE]") == 0);
        sse_events_free(ev, n);
        response_clear(&r);

        /* Completions stream, then a keep-alive request on the same connection. */
        send_post(&p, "/v1/completions", "{\"model\": \"tiny\", \"stream\": true, \"prompt\": \"q\", \"max_tokens\": 2}");
        send_str(&p, "GET /v1/models HTTP/1.1\r\n\r\n");
        next_response(&p, &r);
        n = sse_events(r.body, &ev);
        CHECK(n == 4);
        j = json_loads(ev[0], 0, NULL);
        CHECK(strcmp(json_string_value(json_object_get(json_array_get(json_object_get(j, "choices"), 0), "text")), "q ") == 0);
        json_decref(j);
        sse_events_free(ev, n);
        response_clear(&r);
        json_decref(next_json(&p, 200));

        /* A client that leaves mid-stream cancels its request. */
        unsigned cancelled = fake.n_cancelled;
        send_post(&p, "/v1/completions", "{\"model\": \"tiny\", \"stream\": true, \"prompt\": \"q\", \"max_tokens\": 100}");
        fake_pump(&fake);
        fake_pump(&fake);
        CHECK(fake.n_live == 1);
        http_conn_detach(p.conn);
        fake_pump(&fake);
        CHECK(fake.n_live == 0);
        CHECK(fake.n_cancelled == cancelled + 1);
        free(p.out);
}

/* POST /api/generate: D-Bus Generate's shape, one event per token with its id, then the reason
 * and stats; the whole answer with "stream": false; bad combinations answered 400. */
static void test_native_generate(void) {
        Peer p;
        Response r;
        char **ev;
        size_t n;
        json_t *j;

        peer_open(&p, 1000);
        send_post(&p, "/api/generate", "{\"model\": \"tiny\", \"prompt\": \"x y\", \"max_tokens\": 3}");
        next_response(&p, &r);
        CHECK(r.status == 200 && r.chunked);
        n = sse_events(r.body, &ev);
        /* 3 tokens, the end, [DONE] */
        CHECK(n == 5);
        const char *want[] = { "x ", "y ", "x " };
        for (size_t i = 0; i < 3; i++) {
                j = json_loads(ev[i], 0, NULL);
                CHECK(strcmp(json_string_value(json_object_get(j, "text")), want[i]) == 0);
                CHECK(json_is_integer(json_object_get(j, "token")));
                CHECK(json_is_number(json_object_get(j, "logprob")));
                json_decref(j);
        }
        j = json_loads(ev[3], 0, NULL);
        CHECK(strcmp(json_string_value(json_object_get(j, "finish_reason")), "length") == 0);
        CHECK(strncmp(json_string_value(json_object_get(j, "id")), "gen-", 4) == 0);
        CHECK(json_integer_value(json_object_get(json_object_get(j, "stats"), "completion_tokens")) == 3);
        CHECK(json_is_number(json_object_get(json_object_get(j, "stats"), "generate_ms")));
        json_decref(j);
        CHECK(strcmp(ev[4], "[DONE]") == 0);
        sse_events_free(ev, n);
        response_clear(&r);

        send_post(&p, "/api/generate", "{\"model\": \"tiny\", \"stream\": false, \"max_tokens\": 2, "
                                       "\"messages\": [{\"role\": \"user\", \"content\": \"a b c\"}]}");
        j = next_json(&p, 200);
        CHECK(strcmp(json_string_value(json_object_get(j, "text")), "a b ") == 0);
        CHECK(strcmp(json_string_value(json_object_get(j, "finish_reason")), "length") == 0);
        CHECK(json_integer_value(json_object_get(json_object_get(j, "stats"), "completion_tokens")) == 2);
        json_decref(j);

        send_post(&p, "/api/generate", "{\"model\": \"tiny\", \"prompt\": \"a\", \"messages\": []}");
        check_error(&p, 400, "invalid_value");
        send_post(&p, "/api/generate", "{\"model\": \"tiny\", \"prompt\": \"a\", \"logprobs\": 2}");
        check_error(&p, 400, "invalid_value");
        send_post(&p, "/api/generate", "{\"model\": \"nope\", \"prompt\": \"a\"}");
        check_error(&p, 404, "model_not_found");
        peer_end(&p);
}

int main(void) {
        ctx = (HttpContext) {
                .backend = &fake_backend,
                .backend_ctx = &fake,
                .limits = HTTP_LIMITS_DEFAULT,
                .daemon_uid = 999,
        };
        ctx.limits.max_body_bytes = 1024;
        ctx.limits.max_header_bytes = 1024;

        test_models_and_pipelining();
        test_errors();
        test_limits();
        test_management();
        test_completions();
        test_streaming();
        test_native_generate();
        CHECK(fake.n_live == 0);
        printf("ok\n");
        return 0;
}
