#!/usr/bin/python3
"""quantd speaks sd_notify to a NOTIFY_SOCKET this test listens on: READY=1 with a STATUS naming
the model, WATCHDOG=1 at half of WATCHDOG_USEC, RELOADING=1 then READY=1 on SIGHUP, STOPPING=1
on SIGTERM and a clean exit; and it takes a socket passed through LISTEN_FDS
(systemd-socket-activate), as quantd.socket does."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import svc_common  # noqa: E402

env = svc_common.Env("[limits]\nmax_batch = 2\n")


def test_notify():
    path, sock = svc_common.notify_listen(env.dir)
    seen = []
    env.env.update(NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
    env.start(wait=False)
    try:
        svc_common.recv_until(sock, lambda m: "READY=1" in m.split("\n"), 30, seen)
        status = svc_common.recv_until(sock, lambda m: m.startswith("STATUS="), 5, seen)
        assert "1 model(s): tiny:fp16" in status, status
        t0 = time.time()
        svc_common.recv_until(sock, lambda m: m == "WATCHDOG=1", 2, seen)
        svc_common.recv_until(sock, lambda m: m == "WATCHDOG=1", 2, seen)
        assert time.time() - t0 < 1.0, "watchdog pings too slow"
        env.daemon.send_signal(signal.SIGHUP)
        svc_common.recv_until(sock, lambda m: "RELOADING=1" in m and "MONOTONIC_USEC=" in m, 10, seen)
        svc_common.recv_until(sock, lambda m: "READY=1" in m, 10, seen)
        env.daemon.send_signal(signal.SIGTERM)
        svc_common.recv_until(sock, lambda m: "STOPPING=1" in m, 10, seen)
        rc = env.stop()
        assert rc == 0, rc
    finally:
        sock.close()
        del env.env["NOTIFY_SOCKET"]
        del env.env["WATCHDOG_USEC"]


def test_socket_activation():
    tool = shutil.which("systemd-socket-activate")
    if not tool:
        print("     (skipped: systemd-socket-activate missing)")
        return
    sock_path = os.path.join(env.dir, "act.sock")
    # systemd-socket-activate passes on only the variables named with -E.
    passed = []
    for var in ("DBUS_SESSION_BUS_ADDRESS", "XDG_RUNTIME_DIR", "QUANTD_TEST_CPU", "QUANTD_VK_DEVICE",
                "QUANTD_VK_VALIDATION", "VK_DRIVER_FILES", "VK_ICD_FILENAMES", "HOME", "PATH"):
        if var in env.env:
            passed += ["-E", "%s=%s" % (var, env.env[var])]
    args = [tool, "-l", sock_path] + passed + [env.quantd, "--user", "--config", env.config, "--model-dir", env.models,
            "--model", "tiny.gguf", "--log-level", "debug"]
    offset = len(env.log())
    with open(env.log_path, "a") as log:
        p = subprocess.Popen(args, env=env.env, stdout=log, stderr=subprocess.STDOUT)
        try:
            for _ in range(200):
                if os.path.exists(sock_path):
                    break
                time.sleep(0.05)
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(sock_path)  # the first connection makes systemd-socket-activate start quantd
            end = time.time() + 30
            while "Using the socket passed by the service manager (fd 3)" not in env.log()[offset:] or \
                    "ready on the session bus" not in env.log()[offset:]:
                assert time.time() < end, "quantd did not take the passed socket"
                time.sleep(0.05)
            c.close()
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(20)
    assert p.returncode == 0, p.returncode


sys.exit(svc_common.run_tests(env, [
    ("sd-notify", test_notify),
    ("socket-activation", test_socket_activation),
]))
