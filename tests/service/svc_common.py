"""Shared by the service tests: a private dbus-daemon, the real quantd in --user mode on it, a
random model fixture, and the daemon's log dumped only when a test fails."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SKIP = 77

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <!-- Any local user may connect, so that a test can call as an unprivileged one. -->
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def need(cond, why):
    if not cond:
        print("SKIP:", why)
        sys.exit(SKIP)


def notify_listen(directory):
    """A datagram socket bound at directory/notify for the daemon's sd_notify messages (the
    NOTIFY_SOCKET to set); returns (path, socket)."""
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    return path, sock


def recv_until(sock, want, timeout, seen=None):
    """The first sd_notify message on sock for which want(msg) holds, within timeout seconds;
    every message received is appended to seen (shown if none matches)."""
    end, seen = time.time() + timeout, [] if seen is None else seen
    while time.time() < end:
        sock.settimeout(max(0.01, end - time.time()))
        try:
            msg = sock.recv(4096).decode()
        except socket.timeout:
            break
        seen.append(msg)
        if want(msg):
            return msg
    raise AssertionError("not received in %.0f s; got %r" % (timeout, seen))


def start_bus(directory, name):
    """A private dbus-daemon any local user may connect to; returns (address, pid)."""
    path = os.path.join(directory, name)
    conf = path + ".conf"
    with open(conf, "w") as f:
        f.write(BUS_CONFIG.format(path=path))
    out = subprocess.run(["dbus-daemon", "--config-file=" + conf, "--fork", "--print-pid"],
                         stdout=subprocess.PIPE, text=True, check=True).stdout
    for _ in range(100):
        if os.path.exists(path):
            break
        time.sleep(0.05)
    return "unix:path=" + path, int(out.split()[0])


class Env:
    def __init__(self, config_text="", models=("tiny.gguf",), polkit=False):
        for var in ("QUANTD_BIN", "SERVICE_TOOL"):
            need(os.environ.get(var) and os.path.exists(os.environ[var]), var + " not set")
        need(shutil.which("dbus-daemon"), "dbus-daemon missing")
        self.quantd = os.environ["QUANTD_BIN"]
        self.quantctl = os.environ.get("QUANTCTL_BIN")
        self.tool = os.environ["SERVICE_TOOL"]
        self.dir = tempfile.mkdtemp(prefix="qd-svc-")
        os.chmod(self.dir, 0o755)
        self.models = os.path.join(self.dir, "models")
        os.mkdir(self.models)
        self.model = os.path.join(self.models, "tiny.gguf")
        bundled = self.bundled_model()
        subprocess.run([self.tool, "make-model", self.model], check=True)
        self.bundled = bundled
        self.bus_path = os.path.join(self.dir, "bus")
        self.address, self.bus_pid = start_bus(self.dir, "bus")
        self.env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS=self.address, XDG_RUNTIME_DIR=self.dir)
        self.polkit = None
        self.system_pid = None
        if polkit:
            self.start_polkit()
        self.config = os.path.join(self.dir, "quantd.conf")
        with open(self.config, "w") as f:
            f.write(config_text)
        self.log_path = os.path.join(self.dir, "quantd.log")
        self.daemon = None
        self.start_models = models

    def start_polkit(self):
        """A second private bus as the system bus, with python-dbusmock's polkitd on it."""
        try:
            import dbusmock  # noqa: F401
        except ImportError:
            return
        address, self.system_pid = start_bus(self.dir, "system-bus")
        self.env["DBUS_SYSTEM_BUS_ADDRESS"] = address
        self.polkit = subprocess.Popen(["/usr/bin/python3", "-m", "dbusmock", "--system", "--template", "polkitd"],
                                       env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import dbus
        bus = dbus.bus.BusConnection(address)
        for _ in range(200):
            if bus.name_has_owner("org.freedesktop.PolicyKit1"):
                break
            time.sleep(0.05)
        self.polkit_mock = dbus.Interface(bus.get_object("org.freedesktop.PolicyKit1",
                                                         "/org/freedesktop/PolicyKit1/Authority"),
                                          "org.freedesktop.DBus.Mock")

    @staticmethod
    def bundled_model():
        root = os.environ.get("QUANTD_SOURCE_ROOT", "")
        d = os.path.join(root, "models")
        if os.path.isdir(d):
            for n in sorted(os.listdir(d)):
                if n.endswith(".gguf"):
                    return os.path.join(d, n)
        return None

    def start(self, extra=(), wait=True):
        args = [self.quantd, "--user", "--config", self.config, "--model-dir", self.models]
        if self.bundled:
            args += ["--model-dir", os.path.dirname(self.bundled)]
        args += ["--socket", os.path.join(self.dir, "quantd.sock"), "--log-level", "debug"]
        for m in self.start_models:
            args += ["--model", m]
        args += list(extra)
        self.logf = open(self.log_path, "a")
        self.daemon = subprocess.Popen(args, env=self.env, stdout=self.logf, stderr=subprocess.STDOUT)
        if wait:
            self.wait_for_name()

    def wait_for_name(self, timeout=30):
        import dbus
        bus = dbus.bus.BusConnection(self.address)
        try:
            end = time.time() + timeout
            while time.time() < end:
                if bus.name_has_owner("org.quantd.Quantd1"):
                    return
                if self.daemon.poll() is not None:
                    raise RuntimeError("quantd exited with %d" % self.daemon.returncode)
                time.sleep(0.05)
            raise RuntimeError("quantd did not take its bus name")
        finally:
            bus.close()

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if not self.daemon:
            return None
        if self.daemon.poll() is None:
            self.daemon.send_signal(sig)
            try:
                self.daemon.wait(timeout)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
                raise RuntimeError("quantd did not stop within %d s" % timeout)
        rc = self.daemon.returncode
        self.daemon = None
        self.logf.close()
        return rc

    def log(self):
        try:
            return open(self.log_path).read()
        except OSError:
            return ""

    def close(self, failed):
        try:
            if self.daemon and self.daemon.poll() is None:
                self.daemon.kill()
                self.daemon.wait()
        finally:
            if self.polkit:
                self.polkit.terminate()
                self.polkit.wait()
            for pid in (self.bus_pid, self.system_pid):
                try:
                    if pid:
                        os.kill(pid, signal.SIGTERM)
                except OSError:
                    pass
            if failed:
                sys.stderr.write("---- quantd log ----\n" + self.log() + "---- end of log ----\n")
            shutil.rmtree(self.dir, ignore_errors=True)


def run_tests(env, tests):
    """Runs (name, fn) pairs in order; dumps the daemon log once if any fails."""
    failed = []
    for name, fn in tests:
        t0 = time.time()
        try:
            fn()
            print("ok   %-32s %.2f s" % (name, time.time() - t0))
        except Exception:
            import traceback
            print("FAIL %s" % name)
            traceback.print_exc()
            failed.append(name)
    # The Vulkan validation layer (QUANTD_VK_VALIDATION=1) reports through the daemon's log.
    if "VUID-" in env.log() or "Validation Error" in env.log():
        print("FAIL Vulkan validation messages in the daemon log")
        failed.append("validation")
    env.close(bool(failed))
    if failed:
        print("failed:", ", ".join(failed))
        return 1
    return 0
