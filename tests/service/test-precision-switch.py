#!/usr/bin/python3
"""A live precision switch to a variant that is not resident: the real quantd (--user) on a
private bus with a random model; while a long generation streams, SetPrecision asks for int4
(not built yet). The daemon prepares it in the background and switches at a token boundary:
at least one more Token arrives after the SetPrecision reply and before PrecisionChanged (the
generation is not paused for the build), every token arrives exactly once and the generation
completes at its length, reporting the new precision. Then two requests in a row (the newer
supersedes the older) end at the newer precision."""
import os
import sys
import time

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
N_TOKENS = 120

CONFIG = """[daemon]
idle_timeout = 0
[limits]
max_batch = 4
context_size = 1024
max_new_tokens = 1000
"""

dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
env = svc_common.Env(CONFIG, polkit=True)
env.start()
loop = GLib.MainLoop()
# One connection for the Token signals, the PrecisionChanged broadcast and the SetPrecision
# reply, so that the order in which they are handled is the order the daemon sent them.
bus = dbus.bus.BusConnection(env.address)
mgr = dbus.Interface(bus.get_object(NAME, MGR_PATH), MGR)
events = []


def run_until(pred, timeout):
    end = time.time() + timeout
    ctx = loop.get_context()
    while not pred():
        if time.time() > end:
            return False
        ctx.iteration(False) or time.sleep(0.002)
    return True


def precision():
    return str(bus.get_object(NAME, "/org/quantd/Quantd1/model/tiny").Get(
        MODEL, "Precision", dbus_interface="org.freedesktop.DBus.Properties"))


def on_request_signal(*args, path=None, member=None):
    if member == "Token" and int(args[1]) >= 0:  # -1: held-back text flushed at the end
        events.append(("token", path, int(args[1])))
    elif member == "Finished":
        events.append(("finished", path, str(args[0]), {str(k): v for k, v in args[1].items()}))


def on_precision(*args):
    events.append(("precision",) + tuple(str(a) for a in args))


bus.add_signal_receiver(on_request_signal, dbus_interface=REQ, path_keyword="path", member_keyword="member")
bus.add_signal_receiver(on_precision, signal_name="PrecisionChanged", dbus_interface=MGR)


def set_precision_async(p):
    errors = []
    mgr.SetPrecision("tiny", p, reply_handler=lambda: events.append(("reply", p)),
                     error_handler=lambda e: errors.append(e))
    return errors


def switch_during(prompt, target):
    """Starts a generation, asks for target after its third token; returns the events of it."""
    del events[:]
    path = str(mgr.Generate("tiny", prompt, dbus.Dictionary({"max_tokens": dbus.Int32(N_TOKENS)}, signature="sv")))
    mine = lambda: [e for e in events if e[0] == "token" and e[1] == path]  # noqa: E731
    assert run_until(lambda: len(mine()) >= 3 or any(e[0] == "finished" for e in events), 60)
    errors = set_precision_async(target)
    assert run_until(lambda: any(e[0] == "finished" and e[1] == path for e in events), 120), "no Finished"
    assert run_until(lambda: any(e[0] == "precision" for e in events), 30), "no PrecisionChanged"
    assert not errors, errors
    return path, list(events)


def test_switch_keeps_streaming():
    assert precision() == "fp16", precision()
    for attempt, prompt in enumerate(["hello world", "the world in", "hello hello"]):
        target = ["int4", "int8", "int4"][attempt]
        path, evs = switch_during(prompt, target)
        kinds = [e[0] for e in evs]
        fin = [e for e in evs if e[0] == "finished"][0]
        if fin[2] == "stop" and kinds.index("finished") < kinds.index("precision"):
            # The model emitted its end-of-generation token before the switch: try again.
            mgr.SetPrecision("tiny", "fp16")
            assert run_until(lambda: precision() == "fp16", 30)
            continue
        i_reply, i_prec = kinds.index("reply"), kinds.index("precision")
        assert i_reply < i_prec, kinds
        between = [e for e in evs[i_reply:i_prec] if e[0] == "token" and e[1] == path]
        assert len(between) >= 1, "no Token between the request and the switch: %s" % kinds
        prec = evs[i_prec]
        assert prec[1:] == ("tiny", "fp16", target, "user"), prec
        assert kinds.count("precision") == 1, kinds
        tokens = [e for e in evs if e[0] == "token" and e[1] == path]
        stats = fin[3]
        assert fin[2] in ("length", "stop"), fin
        if fin[2] == "length":
            assert len(tokens) == N_TOKENS, len(tokens)
        # Each token exactly once: as many Token signals as the daemon counted, none after Finished.
        # An end-of-generation token is counted but not sent (no stop strings here).
        assert len(tokens) + (fin[2] == "stop") == int(stats["completion_tokens"]), (len(tokens), fin)
        assert kinds.index("finished") == len(kinds) - 1 or all(k != "token" for k in kinds[kinds.index("finished"):])
        assert stats["precision"] == target, stats
        assert precision() == target
        assert "preparing %s in the background" % target in env.log(), "the variant was not prepared in the background"
        return
    raise AssertionError("every attempt ended with the end-of-generation token before the switch")


def test_newer_request_supersedes():
    before = precision()
    first = "int8" if before != "int8" else "int4"
    del events[:]
    e1 = set_precision_async(first)
    e2 = set_precision_async("fp16")
    assert run_until(lambda: kinds_count("reply") == 2, 30)
    # The property can read fp16 before the PrecisionChanged signal of that switch arrives: wait
    # for both (no signal at all only where nothing had to change).
    def settled():
        changes = [e for e in events if e[0] == "precision"]
        return precision() == "fp16" and (changes[-1][3] == "fp16" if changes else before == "fp16")
    assert run_until(settled, 60), [e for e in events if e[0] == "precision"]
    assert not e1 and not e2
    # Still generates at the final precision.
    path = str(mgr.Generate("tiny", "hello", dbus.Dictionary({"max_tokens": dbus.Int32(4)}, signature="sv")))
    assert run_until(lambda: any(e[0] == "finished" and e[1] == path for e in events), 60)
    fin = [e for e in events if e[0] == "finished" and e[1] == path][0]
    assert fin[3]["precision"] == "fp16", fin
    mgr.SetPrecision("tiny", "auto")


def kinds_count(kind):
    return sum(1 for e in events if e[0] == kind)


sys.exit(svc_common.run_tests(env, [
    ("switch-keeps-streaming", test_switch_keeps_streaming),
    ("newer-request-supersedes", test_newer_request_supersedes),
]))
