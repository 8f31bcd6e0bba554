#!/usr/bin/python3
"""The D-Bus API end to end: a private bus, the real quantd (--user) with a random model, every
method, live introspection against docs/org.quantd.Quantd1.xml, a streamed greedy generation
compared token by token with a direct engine run, 16 concurrent clients, a client that leaves
mid-stream, the busy answer, management refused to an unprivileged caller, quantctl, and a
graceful SIGTERM that ends an in-flight request with "shutdown"."""
import json
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
REQ = "org.quantd.Quantd1.Request"
MODEL = "org.quantd.Quantd1.Model"

CONFIG = """[daemon]
idle_timeout = 0
[limits]
max_batch = 4
queue_length = 24
context_size = 2048
max_new_tokens = 2000
default_max_tokens = 32
"""

dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
env = svc_common.Env(CONFIG, polkit=True)
env.start()
loop = GLib.MainLoop()


def connect():
    return dbus.bus.BusConnection(env.address)


bus = connect()
mgr = dbus.Interface(bus.get_object(NAME, MGR_PATH), MGR)


def props(path, iface):
    return bus.get_object(NAME, path).GetAll(iface, dbus_interface="org.freedesktop.DBus.Properties")


def run_until(pred, timeout):
    """Runs the GLib loop until pred() is true; False on timeout."""
    end = time.time() + timeout
    ctx = loop.get_context()
    while not pred():
        if time.time() > end:
            return False
        ctx.iteration(False) or time.sleep(0.002)
    return True


class Stream:
    """One Generate call and the Token/Finished signals that come back to its connection."""

    def __init__(self, conn, model, prompt, options, on_token=None):
        self.tokens, self.texts, self.reason, self.stats = [], [], None, None
        self.on_token = on_token
        self.conn = conn
        # Installed before the call: signals come after the reply and are unicast to us.
        self.match = conn.add_signal_receiver(self._signal, dbus_interface=REQ, path_keyword="path",
                                              member_keyword="member")
        self.path = None
        self.pending = []
        m = dbus.Interface(conn.get_object(NAME, MGR_PATH), MGR)
        self.path = str(m.Generate(model, prompt, dbus.Dictionary(options, signature="sv")))
        for args in self.pending:
            self._signal(*args[0], **args[1])
        self.pending = []

    def _signal(self, *args, path=None, member=None):
        if self.path is None:
            self.pending.append((args, {"path": path, "member": member}))
            return
        if path != self.path:
            return
        if member == "Token":
            self.texts.append(str(args[0]))
            self.tokens.append(int(args[1]))
            if self.on_token:
                self.on_token(self)
        elif member == "Finished":
            self.reason = str(args[0])
            self.stats = {str(k): v for k, v in args[1].items()}

    @property
    def done(self):
        return self.reason is not None

    def wait(self, timeout=60):
        assert run_until(lambda: self.done, timeout), "no Finished within %d s" % timeout
        self.match.remove()
        return self


def direct_greedy(prompt, n, model=None):
    out = subprocess.run([env.tool, "greedy", model or env.model, prompt, str(n)], capture_output=True, text=True,
                         check=True, env=env.env).stdout.split()
    return [int(t) for t in out]


# ---- tests ----

def canon(xml_text):
    """Interfaces of ours -> members, argument names/types/directions, property types/access and
    change annotations; comments and the standard interfaces ignored."""
    root = ET.fromstring(xml_text)
    out = {}
    for iface in root.findall("interface"):
        name = iface.get("name")
        if not name.startswith("org.quantd."):
            continue
        members = {}
        for el in iface:
            args = tuple((a.get("name"), a.get("type"), a.get("direction") or ("out" if el.tag == "signal" else "in"))
                         for a in el.findall("arg"))
            ann = tuple(sorted((a.get("name"), a.get("value")) for a in el.findall("annotation")))
            members[(el.tag, el.get("name"))] = (args, el.get("type"), el.get("access"), ann)
        out[name] = members
    return out


def test_introspection():
    doc = canon(open(os.environ["QUANTD_DBUS_XML"]).read())
    # A live request object, so that its interface is there to introspect.
    s = Stream(bus, "tiny", "hello", {"max_tokens": dbus.Int32(200)})
    live = {}
    for path in (MGR_PATH, "/org/quantd/Quantd1/model/tiny", s.path):
        xml = bus.get_object(NAME, path).Introspect(dbus_interface="org.freedesktop.DBus.Introspectable")
        live.update(canon(str(xml)))
    dbus.Interface(bus.get_object(NAME, s.path), REQ).Cancel()
    s.wait()
    assert s.reason == "cancelled", s.reason
    # Job objects exist only while a job is kept: test-jobs.py holds that interface to the file.
    assert set(doc) - {"org.quantd.Quantd1.Job"} == set(live), (set(doc), set(live))
    for iface in live:
        assert doc[iface] == live[iface], "%s differs:\ndoc  %s\nlive %s" % (iface, doc[iface], live[iface])
    # Every member in the file carries a comment right before it.
    text = open(os.environ["QUANTD_DBUS_XML"]).read().splitlines()
    for i, line in enumerate(text):
        st = line.strip()
        if st.startswith(("<method", "<signal", "<property", "<interface")):
            j = i - 1
            while j >= 0 and not text[j].strip().endswith("-->"):
                assert text[j].strip() == "" or text[j].strip().startswith("</"), "no comment before: " + st
                j -= 1
            assert j >= 0, "no comment before: " + st


def test_manager_properties():
    p = props(MGR_PATH, MGR)
    assert p["Version"], p
    assert p["Device"], p
    assert int(p["DeviceMemoryTotal"]) > 0
    assert [str(x) for x in p["Models"]] == ["/org/quantd/Quantd1/model/tiny"], p["Models"]
    models = [(str(n), str(o)) for n, o in mgr.ListModels()]
    assert models == [("tiny", "/org/quantd/Quantd1/model/tiny")], models
    mp = props(models[0][1], MODEL)
    assert mp["Name"] == "tiny" and mp["Architecture"] == "llama", mp
    assert os.path.realpath(env.model) == mp["Path"], mp
    assert int(mp["Parameters"]) > 0 and int(mp["DeviceBytes"]) > 0
    assert mp["Precision"] == "fp16" and mp["Pinned"] == "auto", mp


def test_tokenize_roundtrip():
    toks = [int(t) for t in mgr.Tokenize("tiny", "hello world, this is it")]
    assert len(toks) > 3, toks
    text = str(mgr.Detokenize("tiny", dbus.Array(toks, signature="i")))
    assert text.endswith("hello world, this is it"), repr(text)
    for bad in (lambda: mgr.Tokenize("nope", "x"), lambda: mgr.Detokenize("tiny", dbus.Array([10 ** 6], signature="i"))):
        try:
            bad()
            raise AssertionError("no error")
        except dbus.DBusException as e:
            assert e.get_dbus_name() in ("org.quantd.Quantd1.Error.NoSuchModel",
                                         "org.freedesktop.DBus.Error.InvalidArgs"), e


PROMPT = "hello world"


def test_stream_matches_direct_run():
    s = Stream(bus, "tiny", PROMPT, {"max_tokens": dbus.UInt32(24)}).wait()
    want = direct_greedy(PROMPT, 24)
    assert s.tokens == want, "daemon %s\ndirect %s" % (s.tokens, want)
    assert s.reason in ("length", "stop"), s.reason
    assert int(s.stats["completion_tokens"]) >= len(s.tokens) and int(s.stats["prompt_tokens"]) > 0, s.stats
    assert s.stats["precision"] == "fp16"
    assert "".join(s.texts) or not s.tokens


def test_chat_messages_and_options():
    msgs = dbus.Array([("system", "be brief"), ("user", "hello")], signature="(ss)")
    s = Stream(bus, "tiny", "", {"messages": msgs, "max_tokens": 8, "temperature": 0.8, "top_k": 20,
                                 "top_p": 0.9, "min_p": 0.05, "repeat_penalty": 1.1, "seed": dbus.UInt64(7),
                                 "stop": dbus.Array(["\n\n"], signature="s"), "logprobs": True}).wait()
    assert s.reason in ("length", "stop"), s.reason
    # Same seed, same answer.
    s2 = Stream(bus, "tiny", "", {"messages": msgs, "max_tokens": 8, "temperature": 0.8, "top_k": 20,
                                  "top_p": 0.9, "min_p": 0.05, "repeat_penalty": 1.1, "seed": dbus.UInt64(7),
                                  "stop": dbus.Array(["\n\n"], signature="s"), "logprobs": True}).wait()
    assert s.tokens == s2.tokens, (s.tokens, s2.tokens)
    for opts in ({"bogus": 1}, {"max_tokens": -3}, {"temperature": "hot"}):
        try:
            mgr.Generate("tiny", "x", dbus.Dictionary(opts, signature="sv"))
            raise AssertionError("accepted %s" % opts)
        except dbus.DBusException as e:
            assert e.get_dbus_name() == "org.freedesktop.DBus.Error.InvalidArgs", e
    try:
        mgr.Generate("tiny", "x", dbus.Dictionary({"max_tokens": 100000}, signature="sv"))
        raise AssertionError("accepted too many tokens")
    except dbus.DBusException as e:
        assert e.get_dbus_name() == "org.quantd.Quantd1.Error.TooLarge", e


def test_16_clients():
    prompts = ["hello world", "the three", "in the hell", "world or"]
    want = {p: direct_greedy(p, 20) for p in prompts}
    conns = [connect() for _ in range(16)]
    streams = [Stream(c, "tiny", prompts[i % 4], {"max_tokens": dbus.Int32(20)}) for i, c in enumerate(conns)]
    assert run_until(lambda: all(s.done for s in streams), 120), "not all 16 finished"
    for i, s in enumerate(streams):
        assert s.reason in ("length", "stop"), (i, s.reason)
        assert s.tokens == want[prompts[i % 4]], "client %d: %s != %s" % (i, s.tokens, want[prompts[i % 4]])
    for c in conns:
        c.close()


def active():
    return int(props(MGR_PATH, MGR)["ActiveRequests"])


def test_disconnect_frees_slot():
    c = connect()
    got = []
    s = Stream(c, "tiny", PROMPT, {"max_tokens": dbus.Int32(1900)}, on_token=lambda st: got.append(1))
    assert run_until(lambda: len(got) >= 2, 30), "no tokens"
    assert active() >= 1
    t0 = time.time()
    c.close()
    assert run_until(lambda: active() == 0, 10), "request of a departed client still running"
    print("     slot freed %.3f s after the client left" % (time.time() - t0))
    assert "left the bus" in env.log(), "no cancellation logged"
    # And the slot serves the next client.
    s2 = Stream(bus, "tiny", PROMPT, {"max_tokens": dbus.Int32(4)}).wait()
    assert s2.reason in ("length", "stop")
    del s


def test_busy():
    streams, busy = [], 0
    for _ in range(40):
        try:
            streams.append(Stream(bus, "tiny", PROMPT, {"max_tokens": dbus.Int32(1500)}))
        except dbus.DBusException as e:
            assert e.get_dbus_name() == "org.quantd.Quantd1.Error.Busy", e
            busy += 1
    assert busy > 0, "40 long requests against a queue of 24 + 4 slots, none refused"
    if env.quantctl:
        # quantctl exits with 4 when refused as busy. Requests that end (at EOS) free places, so
        # fill the queue again right before each try.
        codes = []
        for _ in range(5):
            while True:
                try:
                    streams.append(Stream(bus, "tiny", PROMPT, {"max_tokens": dbus.Int32(1500)}))
                except dbus.DBusException:
                    break
            p = subprocess.run([env.quantctl, "--address", env.address, "generate", "tiny", "hi", "--raw",
                                "--max-tokens", "2"], capture_output=True, text=True, env=env.env)
            codes.append(p.returncode)
            if p.returncode == 4:
                break
        assert 4 in codes and set(codes) <= {0, 4}, codes
    for s in streams:
        dbus.Interface(bus.get_object(NAME, s.path), REQ).Cancel()
    assert run_until(lambda: all(s.done for s in streams), 60)
    assert all(s.reason == "cancelled" for s in streams), {s.reason for s in streams}
    assert run_until(lambda: active() == 0, 10)


def test_management():
    changes = []
    bus.add_signal_receiver(lambda *a: changes.append([str(x) for x in a]), signal_name="PrecisionChanged",
                            dbus_interface=MGR)
    mgr.SetPrecision("tiny", "int8")
    assert run_until(lambda: changes, 30), "no PrecisionChanged"
    assert changes[0] == ["tiny", "fp16", "int8", "user"], changes
    mp = props("/org/quantd/Quantd1/model/tiny", MODEL)
    assert mp["Precision"] == "int8" and mp["Pinned"] == "int8", mp
    s = Stream(bus, "tiny", PROMPT, {"max_tokens": 4}).wait()
    assert s.stats["precision"] == "int8", s.stats
    mgr.SetPrecision("tiny", "auto")
    assert props("/org/quantd/Quantd1/model/tiny", MODEL)["Pinned"] == "auto"

    # Load a second copy under another name, then unload it.
    shutil.copy(env.model, os.path.join(env.models, "second.gguf"))
    path = mgr.LoadModel("second.gguf", dbus.Dictionary({"name": "two", "precision": "int4"}, signature="sv"))
    assert str(path) == "/org/quantd/Quantd1/model/two", path
    assert run_until(lambda: props(str(path), MODEL)["Precision"] == "int4", 30)
    assert len(mgr.ListModels()) == 2
    mgr.UnloadModel("two")
    assert [str(n) for n, _ in mgr.ListModels()] == ["tiny"]

    outside = os.path.join(env.dir, "outside.gguf")
    shutil.copy(env.model, outside)
    os.symlink(outside, os.path.join(env.models, "link.gguf"))
    for p, err in ((outside, "PathNotAllowed"), ("link.gguf", "PathNotAllowed"), ("../outside.gguf", "PathNotAllowed"),
                   ("/etc/passwd", "PathNotAllowed")):
        try:
            mgr.LoadModel(p, dbus.Dictionary({}, signature="sv"))
            raise AssertionError("loaded " + p)
        except dbus.DBusException as e:
            assert e.get_dbus_name().endswith(err), (p, e)
    for call in (lambda: mgr.UnloadModel("nope"), lambda: mgr.SetPrecision("nope", "int8")):
        try:
            call()
            raise AssertionError("no error")
        except dbus.DBusException as e:
            assert e.get_dbus_name() == "org.quantd.Quantd1.Error.NoSuchModel", e
    policy = json.loads(str(mgr.GetPolicy()))
    assert policy["models"][0]["name"] == "tiny", policy


def test_unprivileged_refused():
    setpriv = shutil.which("setpriv")
    if os.getuid() != 0 or not setpriv or not env.quantctl:
        print("     (skipped: needs root and setpriv to call as another user)")
        return
    base = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", env.quantctl, "--address", env.address]
    ok = subprocess.run(base + ["models"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    for cmd in (["unload", "tiny"], ["precision", "tiny", "int4"], ["load", env.model]):
        p = subprocess.run(base + cmd, capture_output=True, text=True)
        assert p.returncode == 1 and "root or the polkit action" in p.stderr, (cmd, p.returncode, p.stderr)
    assert [str(n) for n, _ in mgr.ListModels()] == ["tiny"]
    assert "refused" in env.log()
    if not env.polkit:
        print("     (polkit part skipped: python3-dbusmock missing)")
        return
    # polkit says yes to org.quantd.manage, after a delay: the call waits for the answer while
    # the daemon keeps serving others.
    env.polkit_mock.SetAllowed(["org.quantd.manage"])
    env.polkit_mock.SetDelay(1.5)
    p = subprocess.Popen(base + ["precision", "tiny", "int4"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    time.sleep(0.3)
    t0 = time.time()
    mgr.Tokenize("tiny", "hello")
    assert time.time() - t0 < 0.5, "the loop was blocked by the polkit call"
    out, err = p.communicate(timeout=30)
    assert p.returncode == 0, (p.returncode, err)
    assert props("/org/quantd/Quantd1/model/tiny", MODEL)["Pinned"] == "int4"
    assert "authorized by polkit" in env.log()
    env.polkit_mock.SetDelay(0.0)
    env.polkit_mock.SetAllowed(dbus.Array([], signature="s"))
    # Back to fp16 before handing the model to the policy, so later tests start from fp16.
    mgr.SetPrecision("tiny", "fp16")
    assert run_until(lambda: props("/org/quantd/Quantd1/model/tiny", MODEL)["Precision"] == "fp16", 30)
    mgr.SetPrecision("tiny", "auto")


def test_quantctl():
    if not env.quantctl:
        print("     (skipped: quantctl not built)")
        return
    q = [env.quantctl, "--address", env.address]
    p = subprocess.run(q + ["--json", "status"], capture_output=True, text=True, check=True)
    st = json.loads(p.stdout)
    assert st["Models"][0]["Name"] == "tiny", st
    p = subprocess.run(q + ["--json", "generate", "tiny", PROMPT, "--raw", "--max-tokens", "24"],
                       capture_output=True, text=True, check=True)
    lines = [json.loads(l) for l in p.stdout.splitlines()]
    final = lines[-1]
    assert [l["token"] for l in lines[:-1] if l["token"] >= 0] == direct_greedy(PROMPT, 24), lines
    assert final["text"] == "".join(l["text"] for l in lines[:-1])
    p = subprocess.run(q + ["tokenize", "tiny", "hello world"], capture_output=True, text=True, check=True)
    assert [int(x) for x in p.stdout.split()] == [int(t) for t in mgr.Tokenize("tiny", "hello world")]
    p = subprocess.run(q + ["chat", "tiny", "--max-tokens", "4"], input="hi\nthere\n", capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(q + ["policy"], capture_output=True, text=True, check=True)
    assert "tiny" in p.stdout
    assert subprocess.run(q + ["precision", "tiny", "fp9"], capture_output=True).returncode == 2
    assert subprocess.run(q + ["frobnicate"], capture_output=True).returncode == 2
    assert subprocess.run(q + ["unload", "nope"], capture_output=True).returncode == 1
    nobus = [env.quantctl, "--address", "unix:path=" + env.dir + "/nobus", "status"]
    assert subprocess.run(nobus, capture_output=True).returncode == 3


def test_bundled_model():
    if not env.bundled:
        print("     (skipped: no models/*.gguf in the source tree)")
        return
    path = str(mgr.LoadModel(env.bundled, dbus.Dictionary({"name": "bundled"}, signature="sv")))
    prompt = "In the beginning"
    s = Stream(bus, "bundled", prompt, {"max_tokens": dbus.Int32(16)}).wait(120)
    want = direct_greedy(prompt, 16, env.bundled)
    assert s.tokens == want, "daemon %s\ndirect %s" % (s.tokens, want)
    print("     bundled: %r" % "".join(s.texts))
    mgr.UnloadModel("bundled")
    assert path not in [str(o) for _, o in mgr.ListModels()]


def test_second_instance_refused():
    p = subprocess.run([env.quantd, "--user", "--config", env.config, "--model-dir", env.models, "--model", "tiny.gguf",
                        "--socket", os.path.join(env.dir, "second.sock")], env=env.env, capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "Failed to acquire the bus name org.quantd.Quantd1" in p.stderr, p.stderr
    # The first instance is unharmed.
    assert [str(n) for n, _ in mgr.ListModels()] == ["tiny"]


def test_sigterm_ends_inflight():
    s = Stream(bus, "tiny", PROMPT, {"max_tokens": dbus.Int32(1900)})
    assert run_until(lambda: len(s.tokens) >= 2, 30)
    env.daemon.send_signal(15)
    assert run_until(lambda: s.done, 20), "no Finished at shutdown"
    assert s.reason == "shutdown", s.reason
    rc = env.stop()
    assert rc == 0, rc


sys.exit(svc_common.run_tests(env, [
    ("introspection", test_introspection),
    ("manager-properties", test_manager_properties),
    ("tokenize-roundtrip", test_tokenize_roundtrip),
    ("stream-matches-direct-run", test_stream_matches_direct_run),
    ("chat-messages-and-options", test_chat_messages_and_options),
    ("16-clients", test_16_clients),
    ("disconnect-frees-slot", test_disconnect_frees_slot),
    ("busy", test_busy),
    ("management", test_management),
    ("unprivileged-refused", test_unprivileged_refused),
    ("quantctl", test_quantctl),
    ("bundled-model", test_bundled_model),
    ("second-instance-refused", test_second_instance_refused),
    ("sigterm-ends-inflight", test_sigterm_ends_inflight),
]))
