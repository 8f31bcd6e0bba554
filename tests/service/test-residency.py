#!/usr/bin/python3
"""Residency and scheduling: with one decoding slot, a caller that queued later is served
before another caller's second request (round-robin per caller); a load that goes over
memory_budget evicts the least recently used idle model, and a model idle past idle_timeout is
unloaded; both show in ListModels and the Models property."""
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svc_common  # noqa: E402

try:
    import dbus
except ImportError:
    print("SKIP: python3-dbus missing")
    sys.exit(77)

MGR = "org.quantd.Quantd1.Manager"
env = svc_common.Env("[daemon]\nmemory_budget = 400K\nidle_timeout = 2s\n[limits]\nmax_batch = 1\n")
env.start()
bus = dbus.bus.BusConnection(env.address)
mgr = dbus.Interface(bus.get_object("org.quantd.Quantd1", "/org/quantd/Quantd1"), MGR)


def names():
    return sorted(str(n) for n, _ in mgr.ListModels())


def wait_for(pred, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_fair_queue():
    import dbus.mainloop.glib
    from gi.repository import GLib
    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    order, paths = [], {}

    def client(tag):
        c = dbus.bus.BusConnection(env.address)
        c.add_signal_receiver(lambda *a, path=None: order.append(paths.get(path, "?")),
                              signal_name="Finished", dbus_interface="org.quantd.Quantd1.Request",
                              path_keyword="path")
        return c, dbus.Interface(c.get_object("org.quantd.Quantd1", "/org/quantd/Quantd1"), MGR)

    (ca, a), (cb, b) = client("a"), client("b")
    opts = lambda n: dbus.Dictionary({"max_tokens": dbus.Int32(n)}, signature="sv")  # noqa: E731
    paths[str(a.Generate("tiny", "hello world", opts(300)))] = "a1"
    paths[str(a.Generate("tiny", "hello world", opts(5)))] = "a2"
    paths[str(a.Generate("tiny", "hello world", opts(5)))] = "a3"
    paths[str(b.Generate("tiny", "hello world", opts(5)))] = "b1"
    ctx = GLib.MainContext.default()
    end = time.time() + 60
    while len(order) < 4 and time.time() < end:
        ctx.iteration(False) or time.sleep(0.005)
    assert order == ["a1", "b1", "a2", "a3"], order
    ca.close()
    cb.close()


def test_lru_eviction():
    dev = int(bus.get_object("org.quantd.Quantd1", "/org/quantd/Quantd1/model/tiny").Get(
        "org.quantd.Quantd1.Model", "DeviceBytes", dbus_interface="org.freedesktop.DBus.Properties"))
    if dev == 0 or dev > 400 * 1024 or 2 * dev <= 400 * 1024:
        print("     (skipped: model device size %d does not fit the 400K budget test)" % dev)
        return
    for n in ("b", "c"):
        shutil.copy(env.model, os.path.join(env.models, n + ".gguf"))
    mgr.LoadModel("b.gguf", dbus.Dictionary({}, signature="sv"))
    # tiny was the least recently used: evicted to stay within 400K.
    assert names() == ["b"], names()
    mgr.Tokenize("b", "hello")  # b is now recently used
    mgr.LoadModel("c.gguf", dbus.Dictionary({}, signature="sv"))
    assert names() == ["c"], names()
    assert "least recently used" in env.log()


def test_idle_unload():
    assert names(), "nothing loaded"
    t0 = time.time()
    assert wait_for(lambda: names() == [], 10), names()
    took = time.time() - t0
    assert took >= 1.0, "unloaded after %.2f s, before the 2 s idle timeout" % took
    props = bus.get_object("org.quantd.Quantd1", "/org/quantd/Quantd1").GetAll(
        MGR, dbus_interface="org.freedesktop.DBus.Properties")
    assert list(props["Models"]) == [], props["Models"]


def test_stop():
    assert env.stop() == 0


sys.exit(svc_common.run_tests(env, [
    ("fair-queue", test_fair_queue),
    ("lru-eviction", test_lru_eviction),
    ("idle-unload", test_idle_unload),
    ("stop", test_stop),
]))
