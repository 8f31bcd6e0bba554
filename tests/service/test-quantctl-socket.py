#!/usr/bin/python3
"""quantctl --socket against the real quantd: every command over the HTTP API on a Unix socket
gives what the same command gives over D-Bus (output, --json shape, exit codes), streaming
generate included. A private session bus, a tiny random model, the daemon in --user mode.
Exits 77 when a prerequisite is missing."""
import http.client
import json
import os
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svc_common  # noqa: E402

CONFIG = """[daemon]
idle_timeout = 0
state_dir = {state}
[limits]
max_batch = 1
queue_length = 2
max_new_tokens = 4000
default_max_tokens = 16
"""

env = svc_common.Env("")
svc_common.need(env.quantctl and os.path.exists(env.quantctl), "QUANTCTL_BIN not set")
with open(env.config, "w") as f:
    f.write(CONFIG.format(state=os.path.join(env.dir, "state")))
SOCK = os.path.join(env.dir, "quantd.sock")
TEXT = os.path.join(env.models, "eval.txt")
with open(TEXT, "w") as f:
    f.write("The quick brown fox jumps over the lazy dog. " * 40)
env.start()
for _ in range(100):
    if os.path.exists(SOCK):
        break
    time.sleep(0.05)

BUS = [env.quantctl, "--address", env.address]
SOCKET = [env.quantctl, "--socket", SOCK]


def run(base, *args, stdin=None, timeout=60):
    return subprocess.run(base + list(args), capture_output=True, text=True, input=stdin, timeout=timeout,
                          env=env.env)


def both(*args, stdin=None):
    """The same command over D-Bus and over the socket: both must succeed."""
    a, b = run(BUS, *args, stdin=stdin), run(SOCKET, *args, stdin=stdin)
    assert a.returncode == 0, (args, a.returncode, a.stderr)
    assert b.returncode == 0, (args, b.returncode, b.stderr)
    return a.stdout, b.stdout


def test_status_models():
    a, b = both("--json", "models")
    assert json.loads(a) == json.loads(b), (a, b)
    assert [m["Name"] for m in json.loads(b)] == ["tiny"]
    a, b = both("--json", "status")
    ja, jb = json.loads(a), json.loads(b)
    assert set(ja) == set(jb), (sorted(ja), sorted(jb))
    for k in ("Version", "Device", "DeviceMemoryTotal", "Models", "ActiveRequests", "QueuedRequests"):
        assert ja[k] == jb[k], (k, ja[k], jb[k])
    a, b = both("status")
    assert a.splitlines()[0] == b.splitlines()[0] and "tiny" in b, (a, b)
    a, b = both("models")
    assert a == b, (a, b)


def test_tokenize():
    a, b = both("tokenize", "tiny", "hello world")
    assert a == b and len(a.split()) >= 2, (a, b)
    a, b = both("--json", "tokenize", "tiny", "hello world")
    assert json.loads(a) == json.loads(b)


def test_generate():
    # Greedy: the same text over both transports, raw prompt and chat template alike.
    for extra in (["--raw"], []):
        a, b = both("generate", "tiny", "Once upon a time", "--max-tokens", "24", *extra)
        assert a == b and len(a) > 1, (extra, a, b)
    a, b = both("--json", "generate", "tiny", "Once upon a time", "--raw", "--max-tokens", "24")
    la = [json.loads(x) for x in a.splitlines()]
    lb = [json.loads(x) for x in b.splitlines()]
    # One line per token, then the summary with the Finished reason and stats.
    assert [x["token"] for x in la[:-1]] == [x["token"] for x in lb[:-1]], (la, lb)
    end = lb[-1]
    assert end["finish_reason"] in ("length", "stop"), end
    assert end["stats"]["completion_tokens"] == len(lb) - 1, end
    assert end["text"] == "".join(x["text"] for x in lb[:-1]) == la[-1]["text"]
    assert set(end["stats"]) == set(la[-1]["stats"]), (end["stats"], la[-1]["stats"])
    assert end["stats"]["precision"] in ("fp16", "int8", "int4")
    # Sampled with a seed: reproducible over the socket.
    x = run(SOCKET, "generate", "tiny", "Hello", "--raw", "--temperature", "0.9", "--seed", "7", "--max-tokens", "20")
    y = run(SOCKET, "generate", "tiny", "Hello", "--raw", "--temperature", "0.9", "--seed", "7", "--max-tokens", "20")
    assert x.returncode == 0 and x.stdout == y.stdout, (x.stdout, y.stdout, x.stderr)


def api(body):
    c = http.client.HTTPConnection("localhost")
    c.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.sock.connect(SOCK)
    c.request("POST", "/api/generate", json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    out = r.status, r.read().decode()
    c.close()
    return out


def test_native_generate():
    # /api/generate without streaming: the whole answer with D-Bus Finished's stats.
    st, body = api({"model": "tiny", "prompt": "Once upon a time", "max_tokens": 24, "stream": False})
    j = json.loads(body)
    assert st == 200 and j["finish_reason"] in ("length", "stop") and j["stats"]["completion_tokens"] > 0, body
    a = run(SOCKET, "generate", "tiny", "Once upon a time", "--raw", "--max-tokens", "24")
    assert a.stdout == j["text"] + "\n", (a.stdout, j["text"])
    st, body = api({"model": "tiny", "prompt": "x", "messages": [{"role": "user", "content": "x"}]})
    assert st == 400 and json.loads(body)["error"]["param"] is None, body
    st, body = api({"model": "tiny", "prompt": "x", "logprobs": 3})
    assert st == 400, body


def test_streaming():
    # Tokens are printed as they arrive: the first line shows up while the generation runs.
    p = subprocess.Popen(SOCKET + ["--json", "generate", "tiny", "Once", "--raw", "--max-tokens", "3000"],
                         stdout=subprocess.PIPE, text=True, env=env.env)
    first = json.loads(p.stdout.readline())
    assert "token" in first and p.poll() is None, first
    rest = p.stdout.read().splitlines()
    assert p.wait(60) == 0
    end = json.loads(rest[-1])
    assert end["stats"]["completion_tokens"] == len(rest), (end, len(rest))


def test_chat():
    a, b = both("chat", "tiny", stdin="Hello there\n\nHow are you?\n")
    assert a == b and a.count("\n") == 2, (a, b)


def test_management():
    second = os.path.join(env.models, "second.gguf")
    subprocess.run(["cp", env.model, second], check=True)
    p = run(SOCKET, "load", second, "--name", "two", "--precision", "int8")
    assert p.returncode == 0 and p.stdout.strip() == "/org/quantd/Quantd1/model/two", (p.stdout, p.stderr)
    models = json.loads(run(BUS, "--json", "models").stdout)
    two = [m for m in models if m["Name"] == "two"][0]
    assert two["Pinned"] == "int8", two
    assert run(SOCKET, "precision", "two", "int4").returncode == 0
    assert run(SOCKET, "precision", "two", "auto").returncode == 0
    two = [m for m in json.loads(run(SOCKET, "--json", "models").stdout) if m["Name"] == "two"][0]
    assert two["Pinned"] == "auto", two
    p = run(SOCKET, "--json", "load", os.path.join(env.models, "absent.gguf"))
    assert p.returncode == 1 and json.loads(p.stdout)["error"] == "Cannot load the model", (p.returncode, p.stdout)
    assert run(SOCKET, "unload", "two").returncode == 0
    assert [m["Name"] for m in json.loads(run(SOCKET, "--json", "models").stdout)] == ["tiny"]
    p = run(SOCKET, "load", "/etc/passwd")
    assert p.returncode == 1 and p.stderr, (p.returncode, p.stderr)


def test_policy():
    a, b = both("--json", "policy")
    ja, jb = json.loads(a), json.loads(b)
    assert set(ja) == set(jb), (sorted(ja), sorted(jb))
    assert ja["models"] == jb["models"] and ja["rules"] == jb["rules"], (ja, jb)
    a, b = both("policy")
    assert a.splitlines()[0].split(";")[0] == b.splitlines()[0].split(";")[0], (a, b)


def test_jobs():
    p = run(SOCKET, "quantize", "tiny", "--type", "q8_0", "--method", "rtn")
    assert p.returncode == 0 and os.path.exists(p.stdout.strip()), (p.stdout, p.stderr)
    a, b = both("--json", "eval", "tiny", "--text", TEXT, "--ctx", "64", "--max-windows", "2")
    ja, jb = json.loads(a), json.loads(b)
    assert abs(ja["ppl"] - jb["ppl"]) < 1e-6 * ja["ppl"], (ja, jb)
    p = run(SOCKET, "eval", "tiny", "--text", TEXT, "--ctx", "64", "--max-windows", "1")
    assert p.returncode == 0 and "perplexity" in p.stdout, p.stdout
    p = run(SOCKET, "quantize", "tiny", "--type", "q2_k")
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)


def refused(s):
    """Whether the request on s was answered busy (503) at once; a running or queued one is not."""
    s.settimeout(0.3)
    try:
        head = s.recv(64)
    except socket.timeout:
        return False
    finally:
        s.settimeout(None)
    return head.startswith(b"HTTP/1.1 503")


def open_stream():
    """A long generation over a raw connection, left running (1 decoding, the rest queued)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(SOCK)
    body = json.dumps({"model": "tiny", "prompt": "Once", "max_tokens": 4000, "temperature": 1.0}).encode()
    s.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    return s


def test_exit_codes():
    p = run(SOCKET, "generate", "nope", "hi")
    assert p.returncode == 1 and "nope" in p.stderr, (p.returncode, p.stderr)
    p = run(SOCKET, "--json", "unload", "nope")
    assert p.returncode == 1 and json.loads(p.stdout)["error"], p.stdout
    assert run(SOCKET, "precision", "tiny", "fp9").returncode == 2
    p = run([env.quantctl, "--socket", os.path.join(env.dir, "absent.sock")], "models")
    assert p.returncode == 3 and "Cannot connect" in p.stderr, (p.returncode, p.stderr)
    # A full queue (1 decoding + 2 queued) answers busy at once: exit 4. Requests end at EOS and
    # free places, so the queue is filled again, until one is seen refused, right before each try.
    held, codes = [], []
    for _ in range(5):
        for _ in range(12):
            held.append(open_stream())
            if refused(held[-1]):
                break
        p = run(SOCKET, "generate", "tiny", "hi", "--raw", "--max-tokens", "2")
        codes.append(p.returncode)
        if p.returncode == 4:
            break
    assert 4 in codes and set(codes) <= {0, 4}, codes
    for s in held:
        s.close()
    # Closing the connections cancels their requests: the daemon is idle again.
    end = time.time() + 30
    while time.time() < end:
        st = json.loads(run(SOCKET, "--json", "status").stdout)
        if st["ActiveRequests"] == 0 and st["QueuedRequests"] == 0:
            break
        time.sleep(0.1)
    assert st["ActiveRequests"] == 0 and st["QueuedRequests"] == 0, st


def test_daemon_gone():
    # A stream cut by the daemon stopping ends with "shutdown" (exit 1), like over D-Bus.
    p = subprocess.Popen(SOCKET + ["generate", "tiny", "Once", "--raw", "--max-tokens", "4000"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env.env)
    p.stdout.read(1)
    assert env.stop() == 0
    out, err = p.communicate(timeout=30)
    assert p.returncode == 1 and "shutdown" in err, (p.returncode, err)
    p = run(SOCKET, "status")
    assert p.returncode == 3, (p.returncode, p.stderr)


sys.exit(svc_common.run_tests(env, [
    ("status-models", test_status_models),
    ("tokenize", test_tokenize),
    ("generate", test_generate),
    ("native-generate", test_native_generate),
    ("streaming", test_streaming),
    ("chat", test_chat),
    ("management", test_management),
    ("policy", test_policy),
    ("jobs", test_jobs),
    ("exit-codes", test_exit_codes),
    ("daemon-gone", test_daemon_gone),
]))
