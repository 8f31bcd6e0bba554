#!/usr/bin/python3
"""The shipped units: `systemd-analyze verify` accepts them, and the system service's
`systemd-analyze security --offline=true` exposure stays at or below 3.0."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

THRESHOLD = 3.0


def main():
    unit_dir = os.environ.get("QUANTD_UNIT_DIR")
    quantd = os.environ.get("QUANTD_BIN")
    if not shutil.which("systemd-analyze") or not unit_dir or not quantd:
        print("systemd-analyze or the built units missing")
        return 77
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        # ExecStart must name an executable that exists: point it at the built daemon.
        for name in ("quantd.service", "quantd.socket"):
            text = open(os.path.join(unit_dir, name)).read()
            text = re.sub(r"^ExecStart=\S+", "ExecStart=" + quantd, text, flags=re.M)
            open(os.path.join(tmp, name), "w").write(text)
        env = dict(os.environ, SYSTEMD_LOG_LEVEL="notice")
        for name in ("quantd.service", "quantd.socket"):
            p = subprocess.run(["systemd-analyze", "verify", "--man=no", os.path.join(tmp, name)],
                               capture_output=True, text=True, env=env, cwd=tmp)
            # Messages about units outside ours (the host's own) are not our business.
            ours = [l for l in (p.stdout + p.stderr).splitlines() if "quantd" in l]
            # User=quantd need not exist on the build machine.
            ours = [l for l in ours if "User" not in l and "Group" not in l]
            print(f"verify {name}: rc={p.returncode}", *ours, sep="\n  ")
            if ours:
                failed = True

        # The per-user units, as `systemctl --user` would see them.
        udir = os.path.join(tmp, "user")
        os.mkdir(udir)
        text = open(os.path.join(unit_dir, "quantd-user.service")).read()
        open(os.path.join(udir, "quantd.service"), "w").write(
            re.sub(r"^ExecStart=\S+", "ExecStart=" + quantd, text, flags=re.M))
        shutil.copy(os.path.join(os.environ["QUANTD_SOURCE_ROOT"], "systemd", "user", "quantd.socket"), udir)
        p = subprocess.run(["systemd-analyze", "--user", "verify", "--man=no", os.path.join(udir, "quantd.service"),
                            os.path.join(udir, "quantd.socket")], capture_output=True, text=True,
                           env=dict(env, XDG_RUNTIME_DIR=tmp), cwd=udir)
        ours = [l for l in (p.stdout + p.stderr).splitlines() if "quantd" in l]
        print(f"verify --user: rc={p.returncode}", *ours, sep="\n  ")
        if p.returncode != 0 or ours:
            print(p.stdout, p.stderr)
            failed = True

        p = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                            os.path.join(tmp, "quantd.service")],
                           capture_output=True, text=True, env=env, cwd=tmp)
        m = re.search(r"Overall exposure level for quantd.service: ([0-9.]+)", p.stdout)
        if not m:
            print(p.stdout, p.stderr)
            print("could not read the exposure level")
            return 1
        level = float(m.group(1))
        print(f"exposure {level} (threshold {THRESHOLD})")
        if level > THRESHOLD:
            print(p.stdout)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
