#!/usr/bin/python3
"""The policy's token-rate cap in the real quantd: a fake power_supply tree ($QUANTD_ROOT) with
AC online, a tiny random model, generations streamed back to back over the Unix socket. Unplugging
AC caps the model at token_rate_on_battery tokens/s (measured over a window, with a tolerance; one
client and two together: the cap is per model), the loop keeps answering at once meanwhile, the
cap shows in GetPolicy / /api/policy / `quantctl policy`, and plugging AC back lifts it.
Exits 77 when a prerequisite is missing."""
import json
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svc_common  # noqa: E402

CAP = 20.0
CONFIG = f"""[daemon]
idle_timeout = 0
cpu_only = yes
[limits]
max_batch = 4
max_new_tokens = 4000
[policy]
poll_interval = 100ms
dwell = 1s
upower = no
power_profiles = no
token_rate_on_battery = {CAP:g}
"""


def write(root, rel, text):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(text + "\n")
    os.rename(path + ".tmp", path)


env = svc_common.Env(CONFIG)
svc_common.need(env.quantctl and os.path.exists(env.quantctl), "QUANTCTL_BIN not set")
ROOT = os.path.join(env.dir, "root")
write(ROOT, "sys/class/power_supply/AC/type", "Mains")
write(ROOT, "sys/class/power_supply/AC/online", "1")
write(ROOT, "sys/class/power_supply/BAT0/type", "Battery")
write(ROOT, "sys/class/power_supply/BAT0/capacity", "80")
write(ROOT, "sys/class/power_supply/BAT0/status", "Charging")
write(ROOT, "proc/meminfo", "MemTotal:       16777216 kB\nMemAvailable:   12582912 kB")
env.env["QUANTD_ROOT"] = ROOT
env.env["DBUS_SYSTEM_BUS_ADDRESS"] = "unix:path=" + os.path.join(env.dir, "no-system-bus")
SOCK = os.path.join(env.dir, "quantd.sock")
env.start()


class Client(threading.Thread):
    """Generations streamed back to back over /api/generate; the arrival time of every token."""

    def __init__(self):
        super().__init__(daemon=True)
        self.times = []
        self.running = True
        self.error = None

    def run(self):
        try:
            while self.running:
                self.one()
        except Exception as e:  # reported by the test that reads the rates
            self.error = e

    def one(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(SOCK)
        body = json.dumps({"model": "tiny", "prompt": "Once upon a time", "max_tokens": 4000,
                           "temperature": 1.0, "seed": len(self.times)}).encode()
        s.sendall(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                  b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        buf = b""
        while self.running:
            data = s.recv(65536)
            if not data:
                break
            buf += data
            now = time.monotonic()
            # Chunked SSE: count token events ("token" key) as they arrive.
            while b"\n\n" in buf:
                ev, buf = buf.split(b"\n\n", 1)
                if b'data: {"text"' in ev:
                    self.times.append(now)
        s.close()

    def rate(self, t0, t1):
        return sum(1 for t in self.times if t0 <= t < t1) / (t1 - t0)


def measure(clients, seconds):
    t0 = time.monotonic()
    time.sleep(seconds)
    t1 = time.monotonic()
    for c in clients:
        assert c.error is None, c.error
    return [c.rate(t0, t1) for c in clients]


def policy():
    p = subprocess.run([env.quantctl, "--socket", SOCK, "--json", "policy"], capture_output=True, text=True,
                       timeout=10, env=env.env)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def wait_cap(value, timeout=5):
    end = time.time() + timeout
    while time.time() < end:
        d = policy()["decision"]
        if d["token_rate_cap"] == value and all(m["token_rate_cap"] == value for m in d["models"]):
            return time.time()
        time.sleep(0.05)
    raise AssertionError("token_rate_cap did not become %r: %r" % (value, policy()["decision"]))


state = {}


def test_uncapped():
    assert policy()["decision"]["token_rate_cap"] is None
    c = Client()
    c.start()
    state["client"] = c
    time.sleep(0.5)
    (r,) = measure([c], 2.0)
    print("uncapped: %.1f tokens/s" % r)
    svc_common.need(r > 4 * CAP, "this machine generates only %.1f tokens/s uncapped" % r)
    state["uncapped"] = r


def test_capped():
    c = state["client"]
    write(ROOT, "sys/class/power_supply/AC/online", "0")
    t = time.time()
    wait_cap(CAP)
    print("cap applied after %.2f s" % (time.time() - t))
    time.sleep(1.0)     # tokens of the step in flight, and the first paced steps
    (r,) = measure([c], 4.0)
    print("capped, one client: %.1f tokens/s (cap %g)" % (r, CAP))
    assert 0.6 * CAP <= r <= 1.25 * CAP, r
    # The loop is not held up by the pacing: the daemon answers at once.
    for _ in range(5):
        t = time.monotonic()
        p = subprocess.run([env.quantctl, "--socket", SOCK, "status"], capture_output=True, env=env.env)
        assert p.returncode == 0 and time.monotonic() - t < 1.0, (p.returncode, time.monotonic() - t)
        t = time.monotonic()
        p = subprocess.run([env.quantctl, "--address", env.address, "status"], capture_output=True, env=env.env)
        assert p.returncode == 0 and time.monotonic() - t < 1.0, (p.returncode, time.monotonic() - t)
    out = subprocess.run([env.quantctl, "--address", env.address, "policy"], capture_output=True, text=True,
                         env=env.env).stdout
    assert "at most %.1f tokens/s per model" % CAP in out and "(<= %.1f tokens/s)" % CAP in out, out


def test_capped_two_clients():
    # The cap is per model: two clients of one model share it.
    c2 = Client()
    c2.start()
    state["client2"] = c2
    time.sleep(1.0)
    r = measure([state["client"], c2], 4.0)
    print("capped, two clients: %.1f + %.1f tokens/s (cap %g)" % (r[0], r[1], CAP))
    assert 0.6 * CAP <= sum(r) <= 1.25 * CAP, r
    assert min(r) > 0.2 * CAP, r
    c2.running = False


def test_recovery():
    write(ROOT, "sys/class/power_supply/AC/online", "1")
    t = time.time()
    wait_cap(None)
    print("cap lifted after %.2f s" % (time.time() - t))
    time.sleep(0.5)
    (r,) = measure([state["client"]], 2.0)
    print("recovered: %.1f tokens/s" % r)
    # Lifted: far above the cap (a ratio to the uncapped rate failed on a loaded machine).
    assert r > 5 * CAP, (r, state["uncapped"])
    state["client"].running = False
    assert env.stop() == 0


sys.exit(svc_common.run_tests(env, [
    ("uncapped", test_uncapped),
    ("capped", test_capped),
    ("capped-two-clients", test_capped_two_clients),
    ("recovery", test_recovery),
]))
