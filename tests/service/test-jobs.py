#!/usr/bin/python3
"""Quantize / Evaluate jobs end to end: a private bus and the real quantd (--user) with the tiny
random model. Quantize over D-Bus with progress signals; the output and its sidecar in the state
directory; an identical request served from the cache; a truncated cache file detected and
rebuilt; the output loaded with LoadModel and generating; Evaluate with a reference (finite PPL,
KL >= 0); Cancel and cancellation when the caller leaves; an unprivileged caller refused;
quantctl quantize / eval; the Job interface against docs/org.quantd.Quantd1.xml; one
quantize + poll round trip over the HTTP socket; the cache reused after a restart; SIGTERM
stopping a running job promptly."""
import json
import math
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svc_common  # noqa: E402

try:
    import dbus
    import dbus.mainloop.glib
    from gi.repository import GLib
except ImportError:
    print("SKIP: python3-dbus or python3-gi missing")
    sys.exit(77)

NAME = "org.quantd.Quantd1"
MGR_PATH = "/org/quantd/Quantd1"
MGR = "org.quantd.Quantd1.Manager"
JOB = "org.quantd.Quantd1.Job"
REQ = "org.quantd.Quantd1.Request"
PROPS = "org.freedesktop.DBus.Properties"

dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
env = svc_common.Env("")
STATE = os.path.join(env.dir, "state")
with open(env.config, "w") as f:
    f.write("[daemon]\nidle_timeout = 0\nstate_dir = %s\n" % STATE)
TEXT = os.path.join(env.models, "eval.txt")
with open(TEXT, "w") as f:
    f.write("The quick brown fox jumps over the lazy dog. " * 40)
env.start()
loop = GLib.MainLoop()
bus = dbus.bus.BusConnection(env.address)
mgr = dbus.Interface(bus.get_object(NAME, MGR_PATH), MGR)


def run_until(pred, timeout):
    end = time.time() + timeout
    ctx = loop.get_context()
    while not pred():
        if time.time() > end:
            return False
        ctx.iteration(False) or time.sleep(0.002)
    return True


class Watch:
    """Progress changes and the Finished signal of jobs, on one connection."""

    def __init__(self, conn):
        self.progress, self.finished = {}, {}
        conn.add_signal_receiver(self._changed, signal_name="PropertiesChanged", dbus_interface=PROPS,
                                 path_keyword="path")
        conn.add_signal_receiver(self._finished, signal_name="Finished", dbus_interface=JOB, path_keyword="path")

    def _changed(self, iface, changed, invalidated, path=None):
        if iface == JOB and "Progress" in changed:
            self.progress.setdefault(str(path), []).append(float(changed["Progress"]))

    def _finished(self, state, result, path=None):
        self.finished[str(path)] = (str(state), {str(k): v for k, v in result.items()})

    def wait(self, path, timeout=50):
        assert run_until(lambda: str(path) in self.finished, timeout), "no Finished for " + str(path)
        return self.finished[str(path)]


watch = Watch(bus)


def job_props(path):
    return bus.get_object(NAME, path).GetAll(JOB, dbus_interface=PROPS)


def quantize(opts, conn_mgr=None):
    return (conn_mgr or mgr).Quantize("tiny", dbus.Dictionary(opts, signature="sv"))


first = {}


def test_quantize_progress():
    path = quantize({"type": "q4_0", "method": "rtn"})
    state, res = watch.wait(path)
    assert state == "done", (state, res, job_props(path))
    out = str(res["path"])
    assert out.startswith(os.path.join(STATE, "quantized") + "/") and out.endswith("-q4_0-rtn-" + out[-21:]), out
    assert os.path.getsize(out) == int(res["bytes"]) > 0
    assert not bool(res["cached"])
    side = json.load(open(out + ".json"))
    assert side["sha256"] == str(res["sha256"]) and side["type"] == "q4_0" and side["method"] == "rtn", side
    assert os.path.basename(out).startswith(str(res["source_sha256"])[:16])
    prog = watch.progress.get(str(path), [])
    assert prog and prog == sorted(prog) and prog[-1] == 1.0, prog
    p = job_props(path)
    assert str(p["State"]) == "done" and str(p["Kind"]) == "quantize" and float(p["Progress"]) == 1.0, p
    assert json.loads(str(p["Result"]))["path"] == out
    first.update(path=out, sha=str(res["sha256"]), seconds=float(res["seconds"]))


def test_cache_hit():
    path = quantize({"type": "q4_0", "method": "rtn"})
    state, res = watch.wait(path)
    assert state == "done" and bool(res["cached"]), (state, res)
    assert str(res["path"]) == first["path"] and str(res["sha256"]) == first["sha"], res
    # Different parameters are a different cache entry.
    path = quantize({"type": "q8_0", "method": "rtn"})
    state, res = watch.wait(path)
    assert state == "done" and not bool(res["cached"]) and str(res["path"]) != first["path"], res


def test_corrupt_cache_rebuilt():
    out = first["path"]
    with open(out, "r+b") as f:
        f.truncate(os.path.getsize(out) // 2)
    path = quantize({"type": "q4_0", "method": "rtn"})
    state, res = watch.wait(path)
    assert state == "done" and not bool(res["cached"]), (state, res)
    assert str(res["path"]) == out and str(res["sha256"]) == first["sha"], res
    assert "corrupt or half-written" in env.log()
    # A leftover without a sidecar (crash before the sidecar was written) is rebuilt as well.
    os.unlink(out + ".json")
    n = env.log().count("corrupt or half-written")
    state, res = watch.wait(quantize({"type": "q4_0", "method": "rtn"}))
    assert state == "done" and not bool(res["cached"]) and os.path.exists(out + ".json"), res
    assert env.log().count("corrupt or half-written") == n + 1


def test_load_quantized_generates():
    obj = mgr.LoadModel(first["path"], dbus.Dictionary({"name": "tiny-q4"}, signature="sv"))
    assert str(obj).endswith("/tiny_2dq4"), obj
    got, fin = [], []
    bus.add_signal_receiver(lambda t, i, lp: got.append(int(i)), signal_name="Token", dbus_interface=REQ)
    bus.add_signal_receiver(lambda reason, stats: fin.append(str(reason)), signal_name="Finished", dbus_interface=REQ)
    mgr.Generate("tiny-q4", "hello", dbus.Dictionary({"max_tokens": dbus.Int32(8)}, signature="sv"))
    assert run_until(lambda: fin, 30)
    assert fin[0] in ("stop", "length") and got, (fin, got)


def test_evaluate_with_ref():
    path = mgr.Evaluate("tiny-q4", dbus.Dictionary({"text_file": "eval.txt", "reference": "tiny", "ctx": dbus.UInt32(64),
                                                    "max_windows": dbus.UInt32(3)}, signature="sv"))
    state, res = watch.wait(path)
    assert state == "done", (state, res, job_props(path))
    ppl, ref, kl = float(res["ppl"]), float(res["ref_ppl"]), float(res["kl_mean"])
    assert math.isfinite(ppl) and ppl > 1 and math.isfinite(ref) and ref > 1, res
    assert kl >= 0 and float(res["kl_p99"]) >= 0 and 0 <= float(res["top1"]) <= 1, res
    assert 4.0 < float(res["bpw"]) < 16.5, res
    # Inline text, no reference.
    state, res = watch.wait(mgr.Evaluate("tiny", dbus.Dictionary({"text": "hello world, " * 30, "ctx": 32},
                                                                  signature="sv")))
    assert state == "done" and math.isfinite(float(res["ppl"])) and "kl_mean" not in res, res
    for bad in ({"text_file": "/etc/passwd"}, {}, {"text": "x", "text_file": "eval.txt"}, {"bogus": "x"}):
        try:
            mgr.Evaluate("tiny", dbus.Dictionary(bad, signature="sv"))
            raise AssertionError("accepted %r" % bad)
        except dbus.exceptions.DBusException as e:
            assert "PathNotAllowed" in e.get_dbus_name() or "InvalidArgs" in e.get_dbus_name(), e


def test_cancel():
    # The first keeps the job thread busy (GPTQ), the second waits queued behind it.
    a = quantize({"type": "q4_1", "method": "gptq", "samples": dbus.UInt32(64), "ctx": dbus.UInt32(128)})
    b = quantize({"type": "q4_1", "method": "awq"})
    dbus.Interface(bus.get_object(NAME, b), JOB).Cancel()
    dbus.Interface(bus.get_object(NAME, a), JOB).Cancel()
    assert watch.wait(b)[0] == "cancelled"
    assert watch.wait(a)[0] == "cancelled", watch.finished[str(a)]
    assert not [f for f in os.listdir(os.path.join(STATE, "quantized")) if "-q4_1-" in f]
    # A job is cancelled when its caller leaves the bus.
    other = dbus.bus.BusConnection(env.address)
    c = quantize({"type": "q4_1", "method": "gptq", "samples": dbus.UInt32(64), "ctx": dbus.UInt32(128)},
                 dbus.Interface(other.get_object(NAME, MGR_PATH), MGR))
    other.close()
    assert watch.wait(c)[0] == "cancelled"
    assert "left, cancelling" in env.log()
    # Running jobs stopped between calibration windows / tensors: nothing was written.
    for p in (a, c):
        assert "Job %s: writing" % str(p).rsplit("/", 1)[1] not in env.log(), p


def test_job_interface_documented():
    path = quantize({"type": "q8_0", "method": "rtn"})
    watch.wait(path)
    xml = str(bus.get_object(NAME, path).Introspect(dbus_interface="org.freedesktop.DBus.Introspectable"))

    def members(text):
        for iface in ET.fromstring(text).findall("interface"):
            if iface.get("name") == JOB:
                return {(el.tag, el.get("name")): (tuple((a.get("name"), a.get("type")) for a in el.findall("arg")),
                                                   el.get("type"),
                                                   tuple(sorted(a.get("value") for a in el.findall("annotation"))))
                        for el in iface}
        return None

    doc = members(open(os.environ["QUANTD_DBUS_XML"]).read())
    assert doc and doc == members(xml), (doc, members(xml))


def test_unprivileged_refused():
    setpriv = shutil.which("setpriv")
    if os.getuid() != 0 or not setpriv or not env.quantctl:
        print("     (skipped: needs root and setpriv to call as another user)")
        return
    base = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", env.quantctl, "--address", env.address]
    for cmd in (["quantize", "tiny", "--type", "q8_0"], ["eval", "tiny", "--text", "eval.txt"]):
        p = subprocess.run(base + cmd, capture_output=True, text=True, timeout=30)
        assert p.returncode == 1 and "root or the polkit action" in p.stderr, (cmd, p.returncode, p.stderr)
    assert "job refused for uid 65534" in env.log()


def test_quantctl():
    if not env.quantctl:
        return
    base = [env.quantctl, "--address", env.address]
    p = subprocess.run(base + ["quantize", "tiny", "--type", "q4_0"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and p.stdout.strip() == first["path"], (p.returncode, p.stdout, p.stderr)
    p = subprocess.run(base + ["eval", "tiny-q4", "--text", TEXT, "--ref", "tiny", "--ctx", "64", "--max-windows", "2"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "perplexity" in p.stdout and "KL mean" in p.stdout, (p.stdout, p.stderr)
    p = subprocess.run(base + ["--json", "eval", "tiny", "--text", TEXT, "--ctx", "64", "--max-windows", "1"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and math.isfinite(json.loads(p.stdout)["ppl"]), (p.stdout, p.stderr)
    p = subprocess.run(base + ["quantize", "tiny", "--type", "q2_k"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 1, (p.returncode, p.stderr)


def test_http_round_trip():
    sock = os.path.join(env.dir, "quantd.sock")
    if not shutil.which("curl") or not os.path.exists(sock):
        print("     (skipped: no curl or no socket)")
        return

    def curl(*args):
        p = subprocess.run(["curl", "-sS", "--unix-socket", sock, "-w", "\n%{http_code}", *args],
                           capture_output=True, text=True, timeout=30, check=True)
        body, code = p.stdout.rsplit("\n", 1)
        return int(code), json.loads(body) if body else None

    code, r = curl("http://localhost/api/quantize", "-H", "Content-Type: application/json",
                   "-d", json.dumps({"model": "tiny", "type": "q8_0", "method": "rtn-clip"}))
    assert code == 202 and r["state"] == "queued", (code, r)
    end = time.time() + 50
    while True:
        code, j = curl("http://localhost/api/jobs/%d" % r["id"])
        assert code == 200 and j["kind"] == "quantize", (code, j)
        if j["state"] in ("done", "failed", "cancelled") or time.time() > end:
            break
        time.sleep(0.1)
    assert j["state"] == "done" and os.path.exists(j["result"]["path"]), j
    assert j["result"]["path"].endswith("-q8_0-rtn-clip-" + j["result"]["path"][-21:]), j
    assert curl("http://localhost/api/jobs/99999")[0] == 404
    assert curl("-X", "DELETE", "http://localhost/api/jobs/99999")[0] == 404
    assert curl("http://localhost/api/evaluate", "-d", json.dumps({"model": "tiny"}))[0] == 400


def test_cache_survives_restart():
    assert env.stop() == 0
    env.start()
    watch.finished.clear()  # job numbers start again at 1
    fresh = dbus.Interface(bus.get_object(NAME, MGR_PATH), MGR)
    state, res = watch.wait(quantize({"type": "q4_0", "method": "rtn"}, fresh))
    assert state == "done" and bool(res["cached"]) and str(res["path"]) == first["path"], (state, res)


def test_sigterm_stops_running_job():
    if not env.bundled:
        print("     (skipped: no bundled model)")
        return
    fresh = dbus.Interface(bus.get_object(NAME, MGR_PATH), MGR)
    path = fresh.Quantize(env.bundled, dbus.Dictionary({"type": "q4_0", "method": "awq", "samples": 8, "ctx": 128},
                                                       signature="sv"))
    assert run_until(lambda: watch.progress.get(str(path)) and watch.progress[str(path)][-1] > 0.05, 30)
    t = time.time()
    assert env.stop() == 0
    assert time.time() - t < 10, time.time() - t
    assert watch.wait(path, 5)[0] == "cancelled"


sys.exit(svc_common.run_tests(env, [
    ("quantize-progress", test_quantize_progress),
    ("cache-hit", test_cache_hit),
    ("corrupt-cache-rebuilt", test_corrupt_cache_rebuilt),
    ("load-quantized-generates", test_load_quantized_generates),
    ("evaluate-with-ref", test_evaluate_with_ref),
    ("cancel", test_cancel),
    ("job-interface-documented", test_job_interface_documented),
    ("unprivileged-refused", test_unprivileged_refused),
    ("quantctl", test_quantctl),
    ("http-round-trip", test_http_round_trip),
    ("cache-survives-restart", test_cache_survives_restart),
    ("sigterm-stops-running-job", test_sigterm_stops_running_job),
]))
