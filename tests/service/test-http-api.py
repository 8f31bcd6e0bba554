#!/usr/bin/python3
"""The HTTP API against the real quantd: a private session bus, a tiny random model, the daemon
on a temporary Unix socket; curl --unix-socket and python's http.client over AF_UNIX exercise
every endpoint, SSE streaming, errors, limits, a client leaving mid-stream and 16 concurrent
clients. Exits 77 when a prerequisite is missing."""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

QUANTD = os.environ.get("QUANTD_BIN")
TOOL = os.environ.get("SERVICE_TOOL")
MAX_BODY = 64 * 1024


def skip(why):
    print("SKIP:", why)
    sys.exit(77)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


class Daemon:
    def __init__(self, tmp, activate=False):
        self.tmp = tmp
        self.sock = os.path.join(tmp, "run", "quantd.sock")
        self.config_sock = self.sock
        if activate:
            # The daemon must serve on the passed fd and leave the configured path alone.
            self.sock = os.path.join(tmp, "activated.sock")
        self.models = os.path.join(tmp, "models")
        os.makedirs(self.models)
        self.model_path = os.path.join(self.models, "tiny.gguf")
        subprocess.run([TOOL, "make-model", self.model_path], check=True)
        shutil.copy(self.model_path, os.path.join(self.models, "second.gguf"))
        conf = os.path.join(tmp, "quantd.conf")
        with open(conf, "w") as f:
            f.write(f"""[daemon]
model_dirs = {self.models}
models = {self.model_path}
socket = {self.config_sock}
cpu_only = yes
log_level = debug
[limits]
max_request_bytes = {MAX_BODY}
queue_length = 64
max_batch = 8
default_max_tokens = 16
[http]
request_timeout_sec = 1
{"tcp = 127.0.0.1:0" if activate else ""}
""")
        env = dict(os.environ)
        env["XDG_RUNTIME_DIR"] = tmp
        env["HOME"] = tmp
        env["XDG_CONFIG_HOME"] = os.path.join(tmp, "config")
        env["XDG_DATA_HOME"] = os.path.join(tmp, "data")
        bus = os.path.join(tmp, "bus")
        self.dbus = subprocess.Popen(["dbus-daemon", "--session", "--nofork", f"--address=unix:path={bus}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        env["DBUS_SESSION_BUS_ADDRESS"] = f"unix:path={bus}"
        for _ in range(100):
            if os.path.exists(bus):
                break
            time.sleep(0.05)
        self.log = open(os.path.join(tmp, "quantd.log"), "w+")
        cmd = [QUANTD, "--user", "--config", conf]
        if activate:
            # systemd-socket-activate listens, then execs quantd at the first connection with
            # LISTEN_FDS; it passes on only the variables named with -E.
            keep = ("PATH", "HOME", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME",
                    "DBUS_SESSION_BUS_ADDRESS", "ASAN_OPTIONS", "UBSAN_OPTIONS")
            cmd = ["systemd-socket-activate", "-l", self.sock] + \
                [f"-E{k}={env[k]}" for k in keep if k in env] + cmd
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("quantd exited with %d" % self.proc.returncode)
            if os.path.exists(self.sock):
                try:
                    st, body = self.request("GET", "/api/models")
                    if st == 200 and json.loads(body)["models"]:
                        return
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError("quantd did not come up with its model")

    def request(self, method, path, body=None, headers=None):
        c = UnixHTTPConnection(self.sock)
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        h = {"Content-Type": "application/json"} if data is not None else {}
        h.update(headers or {})
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        out = r.read()
        c.close()
        return r.status, out

    def json(self, method, path, body=None, status=200):
        st, out = self.request(method, path, body)
        assert st == status, f"{method} {path}: {st} {out!r}"
        return json.loads(out)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.dbus.terminate()
        self.dbus.wait()
        return self.proc.returncode

    def dump_log(self):
        self.log.seek(0)
        sys.stderr.write(self.log.read()[-20000:])


def sse(raw):
    """The data payloads of an SSE body."""
    events = []
    for block in raw.decode().split("\n\n"):
        if block.startswith("data: "):
            events.append(block[6:])
    return events


def check_error(st, out, status, code=None):
    assert st == status, f"want {status}, got {st}: {out!r}"
    e = json.loads(out)["error"]
    assert isinstance(e["message"], str) and isinstance(e["type"], str), e
    if code:
        assert e["code"] == code, e


def curl(d, *args):
    p = subprocess.run(["curl", "-sS", "--unix-socket", d.sock, *args], capture_output=True, check=True)
    return p.stdout


def run(d):
    # Models, both APIs, with curl.
    models = json.loads(curl(d, "http://localhost/v1/models"))
    assert models["object"] == "list" and len(models["data"]) == 1, models
    name = models["data"][0]["id"]
    native = d.json("GET", "/api/models")["models"]
    assert native[0]["name"] == name and native[0]["n_vocab"] > 256, native
    assert d.json("GET", f"/v1/models/{name}")["id"] == name
    status = d.json("GET", "/api/status")
    assert status["models"] == 1 and "version" in status, status
    assert isinstance(d.json("GET", "/api/policy"), dict)

    # Tokenize / detokenize round trip.
    toks = d.json("POST", "/api/tokenize", {"model": name, "text": "hello world", "add_bos": False})["tokens"]
    assert toks and all(isinstance(t, int) for t in toks)
    assert d.json("POST", "/api/detokenize", {"model": name, "tokens": toks})["text"] == "hello world"

    # A greedy completion equals the engine's own greedy run of the same prompt.
    ref = subprocess.run([TOOL, "greedy", d.model_path, "hello world", "12"], capture_output=True, text=True,
                         check=True, env=dict(os.environ, QUANTD_TEST_CPU="1")).stdout.split()
    ref_text = d.json("POST", "/api/detokenize", {"model": name, "tokens": [int(t) for t in ref]})["text"]
    out = d.json("POST", "/v1/completions", {"model": name, "prompt": "hello world", "max_tokens": 12,
                                             "temperature": 0, "logprobs": 1})
    ch = out["choices"][0]
    assert ch["text"] == ref_text, (ch["text"], ref_text)
    assert ch["finish_reason"] in ("stop", "length"), ch
    u = out["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] and u["prompt_tokens"] > 0, u
    assert u["completion_tokens"] == len(ref), (u, ref)
    assert len(ch["logprobs"]["token_logprobs"]) == u["completion_tokens"]
    assert all(lp <= 0 for lp in ch["logprobs"]["token_logprobs"]), ch["logprobs"]

    # Streaming completion (curl -N) carries the same text.
    raw = curl(d, "-N", "http://localhost/v1/completions", "-H", "Content-Type: application/json", "-d",
               json.dumps({"model": name, "prompt": "hello world", "max_tokens": 12, "temperature": 0,
                           "stream": True}))
    ev = sse(raw)
    assert ev[-1] == "[DONE]", ev
    chunks = [json.loads(e) for e in ev[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == ref_text
    assert chunks[-1]["choices"][0]["finish_reason"] == ch["finish_reason"]

    # Chat: whole and streamed (role first, then content, finish, usage, [DONE]) agree.
    msgs = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello"}]
    whole = d.json("POST", "/v1/chat/completions", {"model": name, "messages": msgs, "max_tokens": 10,
                                                    "temperature": 0})
    msg = whole["choices"][0]["message"]
    assert msg["role"] == "assistant" and isinstance(msg["content"], str), whole
    st, raw = d.request("POST", "/v1/chat/completions",
                        {"model": name, "messages": msgs, "max_tokens": 10, "temperature": 0, "stream": True,
                         "stream_options": {"include_usage": True}})
    assert st == 200
    ev = sse(raw)
    assert ev[-1] == "[DONE]"
    chunks = [json.loads(e) for e in ev[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"] == whole["usage"], (usage, whole["usage"])
    fin = chunks[-2]["choices"][0]
    assert fin["finish_reason"] == whole["choices"][0]["finish_reason"], fin
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert text == msg["content"], (text, msg["content"])

    # Seeded sampling is repeatable.
    body = {"model": name, "prompt": "the", "max_tokens": 8, "temperature": 0.9, "top_p": 0.95, "seed": 42}
    assert d.json("POST", "/v1/completions", body)["choices"][0]["text"] == \
        d.json("POST", "/v1/completions", body)["choices"][0]["text"]

    # Errors.
    check_error(*d.request("POST", "/v1/completions", b'{"model": '), 400, "invalid_json")
    check_error(*d.request("POST", "/v1/completions", {"model": "nope", "prompt": "x"}), 404, "model_not_found")
    check_error(*d.request("POST", "/v1/chat/completions", {"model": name, "messages": "x"}), 400)
    check_error(*d.request("POST", "/v1/completions", b"x" * (MAX_BODY + 1)), 413, "request_too_large")
    check_error(*d.request("GET", "/v1/nothing"), 404, "not_found")
    check_error(*d.request("GET", "/v1/completions"), 405, "method_not_allowed")
    check_error(*d.request("PUT", "/api/models"), 405)

    # Management (this test runs as root or as the daemon's user): load, pin, unload.
    loaded = d.json("POST", "/api/models/load", {"path": os.path.join(d.models, "second.gguf"), "name": "second",
                                                 "precision": "int8"})
    assert loaded["name"] == "second", loaded
    assert d.json("POST", "/api/models/second/precision", {"precision": "int4"})["precision"] == "int4"
    pinned = {m["name"]: m for m in d.json("GET", "/api/models")["models"]}["second"]
    assert pinned["pinned"] == "int4", pinned
    d.json("POST", "/api/models/unload", {"name": "second"})
    assert [m["id"] for m in d.json("GET", "/v1/models")["data"]] == [name]
    st, out = d.request("POST", "/api/models/load", {"path": "/etc/passwd"})
    assert st in (403, 404), (st, out)

    # A client that leaves mid-stream frees its slot.
    s = socket.socket(socket.AF_UNIX)
    s.connect(d.sock)
    req = json.dumps({"model": name, "prompt": "hello", "max_tokens": 4000, "stream": True,
                      "temperature": 1.0}).encode()
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(req) + req)
    got = b""
    while got.count(b"data: ") < 2:
        got += s.recv(4096)
    s.close()
    deadline = time.time() + 20
    while True:
        m = {m["name"]: m for m in d.json("GET", "/api/models")["models"]}[name]
        if m["active_requests"] == 0 and m["queued_requests"] == 0:
            break
        assert time.time() < deadline, f"the abandoned request still runs: {m}"
        time.sleep(0.05)
    d.log.flush()
    with open(d.log.name) as f:
        assert "finished: cancelled" in f.read(), "the abandoned request was not cancelled"

    # 16 clients at once, each gets its own full answer (greedy: equal to the sequential one).
    prompts = ["hello", "world", "the", "in"]
    expect = {p: d.json("POST", "/v1/completions", {"model": name, "prompt": p, "max_tokens": 10,
                                                    "temperature": 0})["choices"][0]["text"] for p in prompts}
    results = [None] * 16

    def client(i):
        try:
            p = prompts[i % 4]
            st, raw = d.request("POST", "/v1/completions", {"model": name, "prompt": p, "max_tokens": 10,
                                                            "temperature": 0, "stream": i % 2 == 0})
            if i % 2 == 0:
                ev = sse(raw)
                text = "".join(json.loads(e)["choices"][0]["text"] for e in ev[:-1]) if ev[-1] == "[DONE]" else None
            else:
                text = json.loads(raw)["choices"][0]["text"]
            results[i] = (st, p, text)
        except Exception as e:  # noqa: BLE001 - reported below
            results[i] = (0, None, repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for i, r in enumerate(results):
        assert r and r[0] == 200 and r[2] == expect[r[1]], (i, r, expect)

    # The socket's mode; pipelined requests answered in order on one connection.
    assert os.stat(d.sock).st_mode & 0o777 == 0o660, oct(os.stat(d.sock).st_mode)
    s = socket.socket(socket.AF_UNIX)
    s.connect(d.sock)
    s.sendall(b"GET /api/status HTTP/1.1\r\nHost: x\r\n\r\nGET /nothing HTTP/1.1\r\nHost: x\r\n\r\n"
              b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    raw = b""
    while True:
        k = s.recv(65536)
        if not k:
            break
        raw += k
    s.close()
    statuses = [int(x) for x in re.findall(rb"HTTP/1.1 (\d{3}) ", raw)]
    assert statuses == [200, 404, 200], statuses

    # A request that stalls half-way gets 408 after request_timeout_sec (1 s here).
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(d.sock)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")
    t0 = time.time()
    raw = s.recv(65536)
    s.close()
    assert raw.startswith(b"HTTP/1.1 408 ") and 0.5 < time.time() - t0 < 5, raw

    # A chunked request body (curl streams stdin that way) with a long prompt.
    p = subprocess.run(["curl", "-sS", "--unix-socket", d.sock, "http://localhost/api/tokenize",
                        "-H", "Content-Type: application/json", "-H", "Transfer-Encoding: chunked",
                        "--data-binary", "@-"],
                       input=json.dumps({"model": name, "text": "hello " * 500, "add_bos": False}).encode(),
                       capture_output=True, check=True)
    assert json.loads(p.stdout)["count"] >= 500, p.stdout[:200]

    # Python's http.client keep-alive on one connection, several requests in a row.
    c = UnixHTTPConnection(d.sock)
    for _ in range(3):
        c.request("GET", "/v1/models")
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read())["data"]
    c.close()


def run_activated(d):
    """Socket activation: the passed, already-listening fd is served."""
    models = d.json("GET", "/v1/models")["data"]
    assert len(models) == 1, models
    out = d.json("POST", "/v1/completions", {"model": models[0]["id"], "prompt": "hello", "max_tokens": 4,
                                             "temperature": 0})
    assert out["usage"]["completion_tokens"] >= 1, out
    assert not os.path.exists(d.config_sock), "the configured socket was created despite LISTEN_FDS"

    # The loopback TCP listener ([http] tcp, port 0 here: the daemon logs the one it got).
    d.log.flush()
    with open(d.log.name) as f:
        port = int(re.search(r"HTTP API also on TCP 127.0.0.1 port (\d+)", f.read()).group(1))
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", "/v1/models")
    r = c.getresponse()
    assert r.status == 200 and json.loads(r.read())["data"] == models
    # No peer credentials over TCP: management is refused even for root.
    c.request("POST", "/api/models/unload", body=json.dumps({"name": models[0]["id"]}),
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    check_error(r.status, r.read(), 403, "forbidden")
    c.close()


def with_daemon(tmp, activate, fn):
    d = None
    try:
        d = Daemon(tmp, activate)
        fn(d)
        rc = d.stop()
        # SIGTERM ends it cleanly (under ASan this also means no leak and no error report).
        assert rc == 0, f"quantd exited with {rc}"
    except Exception:
        if d:
            d.dump_log()
        raise
    finally:
        if d:
            d.stop()
            d.log.close()


def main():
    for prog in ("curl", "dbus-daemon"):
        if not shutil.which(prog):
            skip(f"{prog} missing")
    if not QUANTD or not os.access(QUANTD, os.X_OK) or not TOOL or not os.access(TOOL, os.X_OK):
        skip("quantd or service-tool not built")
    with tempfile.TemporaryDirectory(prefix="quantd-http-") as tmp:
        with_daemon(tmp, False, run)
    if shutil.which("systemd-socket-activate"):
        with tempfile.TemporaryDirectory(prefix="quantd-http-act-") as tmp:
            with_daemon(tmp, True, run_activated)
    print("ok")


if __name__ == "__main__":
    main()
