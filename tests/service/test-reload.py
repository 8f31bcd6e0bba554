#!/usr/bin/python3
"""SIGHUP applies new limits: the real quantd starts with small [limits] (queue, new tokens, prompt
length, request size), the test rewrites its config file, sends SIGHUP, sees RELOADING=1 and then
READY=1 on a NOTIFY_SOCKET it listens on, and checks that requests refused before are served now
(and the other way round after a second reload). Exits 77 when a prerequisite is missing."""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svc_common  # noqa: E402

SMALL = """[daemon]
idle_timeout = 0
cpu_only = yes
[limits]
max_batch = 1
queue_length = 1
max_new_tokens = 400
max_prompt_tokens = 40
max_request_bytes = 4096
"""
LARGE = """[daemon]
idle_timeout = 0
cpu_only = yes
[limits]
max_batch = 8
queue_length = 32
max_new_tokens = 800
max_prompt_tokens = 400
max_request_bytes = 1M
"""

# The queue test needs requests that last longer than quantctl takes to start, also on a loaded
# machine: the bundled model's up to 400 steps on the CPU reference (about 30 ms each; closing the
# connection cancels them); the tiny fixture's end within a millisecond.
BUNDLED = svc_common.Env.bundled_model()
env = svc_common.Env(SMALL, models=("tiny.gguf",) + ((BUNDLED,) if BUNDLED else ()))
HOLD = os.path.basename(BUNDLED)[:-5] if BUNDLED else "tiny"
svc_common.need(env.quantctl and os.path.exists(env.quantctl), "QUANTCTL_BIN not set")
SOCK = os.path.join(env.dir, "quantd.sock")
NOTIFY, notify = svc_common.notify_listen(env.dir)
env.env["NOTIFY_SOCKET"] = NOTIFY
env.start()
held = []


def quantctl(*args, bus=False):
    base = [env.quantctl] + (["--address", env.address] if bus else ["--socket", SOCK])
    return subprocess.run(base + list(args), capture_output=True, text=True, timeout=60, env=env.env)


def reload(text):
    with open(env.config, "w") as f:
        f.write(text)
    # Drain what came before (READY, STATUS, ...), then reload.
    notify.setblocking(False)
    try:
        while True:
            notify.recv(4096)
    except BlockingIOError:
        pass
    env.daemon.send_signal(signal.SIGHUP)
    svc_common.recv_until(notify, lambda m: "RELOADING=1" in m.split("\n"), 10)
    svc_common.recv_until(notify, lambda m: "READY=1" in m.split("\n"), 10)


PROMPT = "hello world, " * 40     # over 40 tokens, under 400


def post(path, body):
    c = http.client.HTTPConnection("localhost", timeout=60)
    c.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.sock.connect(SOCK)
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    out = r.status, r.read().decode()
    c.close()
    return out


def hold_stream():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(SOCK)
    body = json.dumps({"model": HOLD, "prompt": "Once", "max_tokens": 400, "temperature": 1.0}).encode()
    s.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    held.append(s)
    return s


def read_until(s, pattern):
    data = b""
    while pattern not in data:
        d = s.recv(4096)
        if not d:
            break
        data += d
    return data


def fill_queue():
    """Fills the one running slot and the one queue place, seen from outside: the first request
    has streamed a token (so the worker took it), and a third one was refused as busy (so the
    second waits). Sending all at once raced with the worker thread taking the first request."""
    read_until(hold_stream(), b"data:")
    hold_stream()
    return read_until(hold_stream(), b"\r\n").startswith(b"HTTP/1.1 503")


def release():
    for s in held:
        s.close()
    held.clear()


def busy_code(rounds=5):
    """quantctl generate while the queue is full: 4 when refused as busy."""
    codes = []
    for _ in range(rounds):
        if not fill_queue():
            codes.append("not full")
            release()
            continue
        p = quantctl("generate", HOLD, "hi", "--raw", "--max-tokens", "2")
        codes.append(p.returncode)
        release()
        if p.returncode == 4:
            break
    return codes


def check_small():
    n = len(quantctl("tokenize", "tiny", PROMPT).stdout.split())
    assert 40 < n <= 400, n
    p = quantctl("generate", "tiny", "hi", "--raw", "--max-tokens", "500")
    assert p.returncode == 1 and "limits" in p.stderr, (p.returncode, p.stderr)
    p = quantctl("generate", "tiny", "hi", "--raw", "--max-tokens", "500", bus=True)
    assert p.returncode == 1, (p.returncode, p.stderr)
    p = quantctl("generate", "tiny", PROMPT, "--raw", "--max-tokens", "2")
    assert p.returncode == 1 and "limits" in p.stderr, (p.returncode, p.stderr)
    st, body = post("/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 2, "user": "x" * 8000})
    assert st == 413, (st, body)
    codes = busy_code()
    assert 4 in codes, codes


def check_large():
    p = quantctl("--json", "generate", "tiny", "hi", "--raw", "--max-tokens", "50")
    assert p.returncode == 0, (p.returncode, p.stderr)
    assert json.loads(p.stdout.splitlines()[-1])["stats"]["completion_tokens"] > 0
    p = quantctl("generate", "tiny", "hi", "--raw", "--max-tokens", "50", bus=True)
    assert p.returncode == 0, (p.returncode, p.stderr)
    p = quantctl("generate", "tiny", PROMPT, "--raw", "--max-tokens", "2")
    assert p.returncode == 0, (p.returncode, p.stderr)
    st, body = post("/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 2, "user": "x" * 8000})
    assert st == 200, (st, body)
    for _ in range(6):
        hold_stream()
    p = quantctl("generate", HOLD, "hi", "--raw", "--max-tokens", "2")
    release()
    assert p.returncode == 0, (p.returncode, p.stderr)


def test_small():
    check_small()


def test_reload_large():
    reload(LARGE)
    check_large()


def test_reload_small_again():
    reload(SMALL)
    check_small()
    assert "Reloading configuration." in env.log()


def test_stop():
    assert env.stop() == 0


sys.exit(svc_common.run_tests(env, [
    ("small-limits", test_small),
    ("sighup-large-limits", test_reload_large),
    ("sighup-small-limits", test_reload_small_again),
    ("stop", test_stop),
]))
