#!/usr/bin/env python3
"""The shipped .deb through real reboots, under real systemd, in a qemu virtual machine.

What it builds:
- a minimal Debian root (mmdebstrap: systemd, udev, python3, the cloud kernel, the qemu guest
  agent, ca-certificates), cached as a tarball keyed by what goes into it;
- from it, per run, an ext4 image (`mkfs.ext4 -d`) holding the project's .deb installed with
  dpkg (its postinst enables the unit), demo packages at version 1, the ECS agent stand-in as
  `ecs.service`, and two drop-ins: /etc/ecs-patchd/config.d/50-vm-test.toml (coordination,
  polling and check interval for a test that lasts minutes) and a systemd drop-in giving the
  service the stand-ins' endpoints and static credentials;
- on the host: the AWS stand-ins (moto, IMDSv2, the agent's ECS side, a lease table) and an
  HTTP apt repository, all on 127.0.0.1, which the guest reaches at qemu's user-mode gateway
  10.0.2.2. The guest is given no other address to reach.

What it checks, from outside (the stand-in's ECS records, and commands run in the guest through
the qemu guest agent on a virtio-serial port):
1. the cycle the daemon starts by itself: drain, install (a "kernel" whose postinst asks for a
   reboot, a userland package, the agent), a real reboot, resume, ACTIVE, slot released;
2. a `systemctl stop` during a slow package transaction: the transaction finishes, a removal of
   the package is refused while the cycle is unfinished, and the next start resumes and ends it;
3. ecs-patchd upgraded by its own cycle: the daemon runs the new binary in its place;
4. an administrator's reinstall under live systemd: daemon-reload, try-restart;
5. readiness (Type=notify): while IMDS refuses tokens the unit stays "activating";
6. the watchdog: a live daemon's pings keep it, a stopped (SIGSTOP) one is restarted.

Everything it saw stays in the transcript folder (serial console, timeline, commands run in the
guest, journal, the stand-ins' log); the image and the stand-ins are removed at the end. Prints
`vm: N passed, M failed` last.

usage: vm_test.py [--deb PATH] [--work DIR] [--cache DIR]
"""

import argparse
import base64
import contextlib
import functools
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from datetime import datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent.parent
STANDINS = PROJECT / "tests" / "standins"
sys.path.insert(0, str(STANDINS))
from standin_ctl import call as control_call  # noqa: E402 (found through the path above)

SUITE = "bookworm"
# ca-certificates: a dependency of the .deb, which dpkg -i does not fetch.
GUEST_PACKAGES = ["systemd-sysv", "udev", "python3", "linux-image-cloud-amd64", "qemu-guest-agent", "ca-certificates"]
# Documentation is of no use in a test guest, and leaving it out makes the image smaller.
MMDEBSTRAP_OPTIONS = ["--variant=apt", "--dpkgopt=path-exclude=/usr/share/doc/*",
                      "--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/locale/*"]
GATEWAY = "10.0.2.2"  # the host's 127.0.0.1, from a guest on qemu's user-mode network
CLUSTER = "demo"
LEASE_TABLE = "ecs-patchd-leases"
# A task stopped by the drain lingers this long in DEACTIVATING and STOPPING (its desired
# status is STOPPED at once): a daemon that took the counts for "drained" would install this
# much too early.
DEACTIVATING_SECONDS = 8
SLOW_SECONDS = 20  # demo-app 3.0's pre-install script, during which the service is stopped
# Longer than the daemon's post-boot resume should take, so that a daemon which left the
# resume to its first scheduled check (a random wait up to the interval) would show.
CHECK_INTERVAL_SECONDS = 40
RESUME_WITHIN_SECONDS = 3
# The scenario's limit (the issue's is 10 minutes for the whole test, setup included); it
# takes about 5 minutes, 6 when the guest's root is built first.
SCENARIO_LIMIT = 540
MARKER = ".ecs-patchd-vm-test"  # marks a work folder as this test's, which it may empty

# Versions before and after: name -> (installed in the image, first update).
PACKAGES = {"linux-image-standin": ("1.0", "2.0"), "demo-app": ("1.0", "2.0"), "amazon-ecs-init": ("1.0.0", "1.1.0")}
# The "kernel" asks for a reboot on upgrade the way Debian's kernel packages do, through
# /var/run/reboot-required (ecs-patchd's packages.apt.reboot_required_file).
SCRIPTS = {"linux-image-standin": {"postinst": 'if [ "$1" = configure ] && [ -n "${2:-}" ]; then\n'
                                               '  echo "*** System restart required ***" > /var/run/reboot-required\n'
                                               'fi'}}
SLOW_SCRIPTS = {"preinst": f"mkdir -p /var/lib/demo-app\ntouch /var/lib/demo-app/slow-started\nsleep {SLOW_SECONDS}",
                "postinst": "touch /var/lib/demo-app/slow-finished"}


class Failed(Exception):
    """A step of the test could not go on."""


class GuestTimeout(OSError):
    """A command in the guest did not end in time."""


# ---- the guest image ---------------------------------------------------------------------

def base_root(cache):
    """The minimal Debian root as a tarball, built once for what goes into it."""
    key = hashlib.sha256(json.dumps([SUITE, GUEST_PACKAGES, MMDEBSTRAP_OPTIONS]).encode()).hexdigest()[:16]
    tar = cache / f"vm-base-{key}.tar"
    if not tar.exists():
        cache.mkdir(parents=True, exist_ok=True)
        for old in cache.glob("vm-base-*.tar"):
            old.unlink()
        log(f"building the guest's Debian {SUITE} root (mmdebstrap; cached in {cache})")
        partial = cache / f"vm-base-{key}.partial.tar"  # mmdebstrap picks the format by the suffix
        run(["mmdebstrap", *MMDEBSTRAP_OPTIONS, "--include=" + ",".join(GUEST_PACKAGES), SUITE, str(partial)],
            stdin=subprocess.DEVNULL)
        partial.rename(tar)
    return tar


def demo_deb(build, name, version, scripts=None):
    """A tiny package owning /usr/share/NAME/VERSION, with maintainer `scripts` {name: body}."""
    pkg = build / f"{name}-{version}"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "usr/share" / name).mkdir(parents=True)
    (pkg / "usr/share" / name / version).write_text(f"{name} {version}\n")
    (pkg / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: ecs-patchd tests <tests@invalid>\n"
        f"Description: ecs-patchd VM test package\n")
    for script, body in (scripts or SCRIPTS.get(name, {})).items():
        path = pkg / "DEBIAN" / script
        path.write_text("#!/bin/sh\nset -e\n" + body + "\n")
        path.chmod(0o755)
    out = build / f"{name}_{version}_all.deb"
    run(["dpkg-deb", "--root-owner-group", "--build", str(pkg), str(out)])
    shutil.rmtree(pkg)
    return out


def demo_debs(build, which):
    """The demo packages at their first (which=0) or updated (which=1) versions."""
    return [demo_deb(build, name, versions[which]) for name, versions in PACKAGES.items()]


def rebuilt(deb, build, suffix):
    """`deb` with `suffix` added to its version: an upgrade with the same contents."""
    unpacked = build / "rebuilt"
    run(["dpkg-deb", "-R", str(deb), str(unpacked)])
    control = unpacked / "DEBIAN/control"
    fields = control.read_text().splitlines()
    version = next(line.split(": ", 1)[1] for line in fields if line.startswith("Version: ")) + suffix
    control.write_text("\n".join(f"Version: {version}" if line.startswith("Version: ") else line
                                 for line in fields) + "\n")
    out = build / f"ecs-patchd_{version}_amd64.deb"
    run(["dpkg-deb", "--root-owner-group", "--build", str(unpacked), str(out)])
    shutil.rmtree(unpacked)
    return out, version


def publish(repo, packages):
    """Adds `packages` (.deb paths) to the flat apt repository `repo` and indexes it. The new
    index replaces the old one file by file (rename), so that apt never reads half of one."""
    repo.mkdir(parents=True, exist_ok=True)
    for deb in packages:
        shutil.copy(deb, repo)
    index = subprocess.run(["apt-ftparchive", "packages", "."], cwd=repo, capture_output=True, check=True).stdout
    (repo / "Packages.new").write_bytes(index)
    os.replace(repo / "Packages.new", repo / "Packages")
    release = subprocess.run(["apt-ftparchive", "release", "."], cwd=repo, capture_output=True, check=True).stdout
    (repo / "Release.new").write_bytes(release)
    os.replace(repo / "Release.new", repo / "Release")


def from_guest(url):
    """A host URL on 127.0.0.1 as the guest reaches it."""
    return url.replace("127.0.0.1", GATEWAY)


class Image(NamedTuple):
    disk: Path
    kernel: Path
    initrd: Path
    unit_enabled: bool  # whether dpkg's postinst enabled ecs-patchd.service


def build_image(scratch, tar, deb, standin, repo_url):
    """The guest's disk image, its kernel and initrd."""
    root = scratch / "root"
    root.mkdir()
    run(["tar", "-C", str(root), "-xf", str(tar)])
    (root / "etc/fstab").write_text("/dev/vda / ext4 rw,relatime 0 1\n")
    (root / "etc/hostname").write_text("ecs-host\n")
    # A persistent journal, so that the excerpts cover both boots.
    (root / "var/log/journal").mkdir(exist_ok=True)
    shutil.copy(HERE / "guest/10-dhcp.network", root / "etc/systemd/network/")
    enable(root, "systemd-networkd.service", "multi-user.target")
    enable(root, "systemd-networkd-wait-online.service", "network-online.target")
    # apt's own daily runs would take dpkg's lock in the middle of the test.
    for timer in ("apt-daily.timer", "apt-daily-upgrade.timer"):
        (root / "etc/systemd/system" / timer).symlink_to("/dev/null")
    # The agent stand-in, as the ECS agent's unit.
    shutil.copy(HERE / "guest/ecs-agent-standin.py", root / "usr/local/lib/")
    shutil.copy(STANDINS / "standin_ctl.py", root / "usr/local/lib/")
    shutil.copy(HERE / "guest/ecs.service", root / "etc/systemd/system/")
    enable(root, "ecs.service", "multi-user.target", unit_dir="/etc/systemd/system")
    (root / "etc/ecs").mkdir(exist_ok=True)
    control = from_guest(standin["moto_url"])
    (root / "etc/ecs/standin.env").write_text(
        f"STANDIN_CONTROL={control}\nSTANDIN_AGENT={from_guest(standin['agent_url'])}\n")
    (root / "etc/ecs/ecs.config").write_text(f"ECS_CLUSTER={CLUSTER}\n")
    # apt sees the test's repository and nothing else.
    for old in (root / "etc/apt/sources.list.d").glob("*"):
        old.unlink()
    (root / "etc/apt/sources.list").write_text(f"deb [trusted=yes] {repo_url} ./\n")

    # Version 1 of the demo packages, and the project's package, installed by dpkg.
    packages = [*demo_debs(scratch, 0), deb]
    for package in packages:
        shutil.copy(package, root / "root")
    run(["chroot", str(root), "dpkg", "-i", *(f"/root/{p.name}" for p in packages)])

    # The test's settings: the only files written by hand, both drop-ins.
    dropin = root / "etc/ecs-patchd/config.d/50-vm-test.toml"
    dropin.write_text(f"""# The VM test's settings (tests/vm/vm_test.py).
[drain]
poll_initial = "1s"
poll_max = "2s"

[coordination]
backend = "dynamodb"
dynamodb_table = "{LEASE_TABLE}"
poll = "2s"

[schedule]
check_interval = "{CHECK_INTERVAL_SECONDS}s"
""")
    dropin.chmod(0o644)
    service_dropin = root / "etc/systemd/system/ecs-patchd.service.d/50-vm-test.conf"
    service_dropin.parent.mkdir(parents=True)
    service_dropin.write_text(
        "# The VM test's endpoints (tests/vm/vm_test.py): the stand-ins on the host.\n[Service]\n"
        f"Environment=AWS_ENDPOINT_URL={control}\n"
        f"Environment=AWS_EC2_METADATA_SERVICE_ENDPOINT={from_guest(standin['imds_url'])}\n"
        "Environment=AWS_ACCESS_KEY_ID=standin AWS_SECRET_ACCESS_KEY=standin\n")

    image = Image(scratch / "disk.img", scratch / "vmlinuz", scratch / "initrd.img",
                  (root / "etc/systemd/system/multi-user.target.wants/ecs-patchd.service").is_symlink())
    shutil.copy(max((root / "boot").glob("vmlinuz-*")), image.kernel)
    shutil.copy(max((root / "boot").glob("initrd.img-*")), image.initrd)
    with open(image.disk, "wb") as f:
        f.truncate(3 << 30)
    run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), str(image.disk)])
    shutil.rmtree(root)
    return image


def enable(root, unit, target, unit_dir="/lib/systemd/system"):
    wants = root / "etc/systemd/system" / f"{target}.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / unit
    if not link.is_symlink():
        link.symlink_to(f"{unit_dir}/{unit}")


# ---- talking to the guest ----------------------------------------------------------------

class GuestAgent:
    """The qemu guest agent on its virtio-serial port: runs commands in the guest."""

    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()

    def _session(self):
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(3)
        sock.connect(str(self.path))
        stream = sock.makefile("rwb")
        # 0xff resets the agent's parser; the sync's answer (after a 0xff) skips stale replies.
        ident = random.randint(1, 1 << 30)
        stream.write(b"\xff" + json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": ident}}).encode()
                     + b"\n")
        stream.flush()
        while self._reply(stream).get("return") != ident:
            pass
        sock.settimeout(10)
        return sock, stream

    @staticmethod
    def _reply(stream):
        while True:
            line = stream.readline()
            if not line:
                raise OSError("the guest agent closed the connection")
            line = line.lstrip(b"\xff").strip()
            if line:
                return json.loads(line)

    def _call(self, stream, command, **arguments):
        stream.write(json.dumps({"execute": command, "arguments": arguments}).encode() + b"\n")
        stream.flush()
        reply = self._reply(stream)
        if "error" in reply:
            raise OSError(f"guest agent: {command}: {reply['error']}")
        return reply["return"]

    def sh(self, command, timeout=60):
        """Runs `command` with /bin/sh in the guest: (exit code, stdout, stderr). Raises OSError
        when the guest agent does not answer (the guest is down or rebooting), GuestTimeout
        when the command does not end within `timeout` seconds."""
        with self.lock:
            sock, stream = self._session()
            with sock:
                pid = self._call(stream, "guest-exec", path="/bin/sh", arg=["-c", command],
                                 **{"capture-output": True})["pid"]
                deadline = time.monotonic() + timeout
                while not (status := self._call(stream, "guest-exec-status", pid=pid))["exited"]:
                    if time.monotonic() > deadline:
                        raise GuestTimeout(f"`{command}` did not end within {timeout} s in the guest")
                    time.sleep(0.2)

        def text(key):
            return base64.b64decode(status.get(key, "")).decode(errors="replace")

        return status.get("exitcode", -1), text("out-data"), text("err-data")


class Guest:
    """Commands in the guest, each written to the transcript's commands.txt."""

    def __init__(self, agent, transcript):
        self.agent = agent
        self.log = transcript / "commands.txt"

    def run(self, command, timeout=60):
        """(exit code, stdout, stderr) of `command`."""
        code, out, err = self.agent.sh(command, timeout)
        with self.log.open("a") as f:
            f.write(f"$ {command}\n(exit {code})\n{out}{err}\n")
        return code, out, err

    def must(self, command, timeout=60):
        """The output of `command`, which must succeed."""
        code, out, err = self.run(command, timeout)
        if code != 0:
            raise Failed(f"`{command}` exited {code} in the guest: {err.strip()[-500:]}")
        return out

    def answers(self, command, timeout=15):
        """The output of `command`, or None when the guest does not answer (not logged: polls)."""
        try:
            return self.agent.sh(command, timeout)[1]
        except OSError:
            return None

    def unit(self, *properties):
        """Properties of ecs-patchd.service, from `systemctl show`."""
        out = self.must("systemctl show ecs-patchd -p " + ",".join(properties))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def cycle(self):
        """The last cycle, as `ecs-patchd status --json` shows it: id, finished, summary and
        history (each step's name and start, on the guest's clock)."""
        status = json.loads(self.must("ecs-patchd status --json", 30))
        cycle = status["cycle"]
        if cycle is None:
            return None
        history = [(m["step"], datetime.fromisoformat(m["at"]).timestamp()) for m in cycle["history"]]
        return {"id": cycle["id"], "finished": status["finished"], "summary": status["summary"], "history": history}

    def cycle_finished(self):
        """Whether the last cycle has ended (False while the guest does not answer)."""
        try:
            cycle = self.cycle()
        except (OSError, Failed):
            return False
        return cycle is not None and cycle["finished"]


# ---- what the test sees ------------------------------------------------------------------

class EcsSample(NamedTuple):
    at: float
    status: str
    agent_connected: bool
    agent_version: str
    holders: tuple
    tasks: tuple  # every task of the cluster: {arn, container_instance_arn, last_status, stopped_at, ...}


class GuestSample(NamedTuple):
    at: float
    boot_id: str
    status_line: str  # systemctl status's "Status:" line


class Watch:
    """Samples the stand-in's ECS records and the guest (boot id, the service's status line)
    in the background, and writes what changed to the transcript's timeline."""

    def __init__(self, control, guest, transcript, instance_arn, qemu):
        self.control = control
        self.guest = guest
        self.arn = instance_arn
        self.qemu = qemu
        self.ecs = []
        self.seen = []
        self.timeline = open(transcript / "timeline.txt", "w")
        self.start = time.time()
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._loop, args=(self._sample_ecs, 0.5), daemon=True),
                        threading.Thread(target=self._loop, args=(self._sample_guest, 1.0), daemon=True)]
        for t in self.threads:
            t.start()

    def note(self, what):
        self.timeline.write(f"{time.time() - self.start:8.1f}s  {what}\n")
        self.timeline.flush()

    def _loop(self, sample, every):
        last = None
        while not self.stopped.wait(every):
            try:
                last = sample(last)
            except Exception as e:  # keep sampling whatever one round met
                self.note(f"sampling: {e!r}")

    def _sample_ecs(self, last):
        state = control_call(self.control, "state")
        lease = control_call(self.control, "lease")
        me = next(i for i in state["instances"] if i["arn"] == self.arn)
        holders = tuple(sorted(h["id"] for g in lease.values() if isinstance(g, dict) for h in g.get("holders", [])))
        sample = EcsSample(time.time(), me["status"], me["agent_connected"], state["agent_version"], holders,
                           tuple(state["tasks"]))
        self.ecs.append(sample)
        running = sum(1 for t in sample.tasks
                      if t["container_instance_arn"] == self.arn and t["desired_status"] == "RUNNING")
        shown = (sample.status, sample.agent_connected, sample.agent_version, holders, running)
        if shown != last:
            self.note(f"ECS: status {sample.status}, agent connected {sample.agent_connected}, agent "
                      f"{sample.agent_version}, tasks desired RUNNING here {running}, slot holders {list(holders)}")
        return shown

    def _sample_guest(self, last):
        out = self.guest.answers("cat /proc/sys/kernel/random/boot_id; systemctl status ecs-patchd --no-pager "
                                 "--lines=0 | sed -n 's/^ *Status: //p'")
        if out is None:
            seen = ("(no answer)", "")
        else:
            lines = out.splitlines() + ["", ""]
            seen = (lines[0], lines[1].strip('"'))
            self.seen.append(GuestSample(time.time(), *seen))
        if seen != last:
            self.note(f"guest: boot {seen[0]}; systemctl status: {seen[1]}")
        return seen

    def wait(self, what, condition, timeout):
        """Waits until `condition()` is true; raises Failed after `timeout` seconds, or when
        qemu has ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.qemu.poll() is not None:
                raise Failed(f"qemu ended (exit {self.qemu.returncode}) while waiting for: {what}")
            if condition():
                self.note(f"reached: {what}")
                return
            time.sleep(0.5)
        raise Failed(f"not reached within {timeout} s: {what}")

    def latest(self):
        return self.ecs[-1] if self.ecs else None

    def boots(self):
        return list(dict.fromkeys(s.boot_id for s in self.seen))

    def stop(self):
        self.stopped.set()
        for t in self.threads:
            t.join(timeout=20)
        self.timeline.close()


class Checks:
    """Named outcomes, printed as they are made."""

    def __init__(self):
        self.results = []

    def check(self, name, ok, detail=""):
        self.results.append((name, bool(ok)))
        print(f"vm: {'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}", flush=True)
        return ok

    def failed(self):
        return sum(1 for _, ok in self.results if not ok)


# ---- the test ----------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deb", help="the package to test (default: the newest dist/ecs-patchd_*_amd64.deb)")
    parser.add_argument("--work", default=str(PROJECT / "target/vm-test"),
                        help="the transcript's folder, emptied first (it must be empty or this test's)")
    parser.add_argument("--cache", default=os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                                                        "ecs-patchd"), help="where the guest's base root is kept")
    args = parser.parse_args()
    debs = [Path(args.deb)] if args.deb else sorted(PROJECT.glob("dist/ecs-patchd_*_amd64.deb"),
                                                    key=lambda p: p.stat().st_mtime)
    if not debs or not debs[-1].is_file():
        sys.exit("vm: no package to test: run scripts/package x86_64 first, or pass --deb")
    deb = debs[-1].resolve()
    work = Path(args.work).resolve()
    if work.exists() and any(work.iterdir()) and not (work / MARKER).exists():
        sys.exit(f"vm: {work} is not empty and not this test's folder: give --work an empty or new folder")
    shutil.rmtree(work, ignore_errors=True)
    transcript = work / "transcript"
    transcript.mkdir(parents=True)
    (work / MARKER).touch()
    log(f"testing {deb}")

    checks = Checks()
    started = time.monotonic()

    def interrupted(signum, _):
        raise Failed(f"the scenario took longer than {SCENARIO_LIMIT} s" if signum == signal.SIGALRM
                     else f"stopped by {signal.Signals(signum).name}")

    for signum in (signal.SIGALRM, signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, interrupted)
    signal.alarm(SCENARIO_LIMIT)
    try:
        with contextlib.ExitStack() as cleanup:
            Scenario(deb, transcript, Path(args.cache), checks, cleanup).run()
    except Failed as e:
        checks.check("the scenario ran to its end", False, str(e))
    except Exception as e:  # a harness fault is a failure too, with its traceback kept
        (transcript / "harness-error.txt").write_text(traceback.format_exc())
        checks.check("the scenario ran to its end", False, f"{e!r} (traceback in harness-error.txt)")
    finally:
        signal.alarm(0)
    failed = checks.failed()
    print(f"vm: the whole test took {time.monotonic() - started:.0f} s")
    if failed:
        for name in ("timeline.txt", "journal.txt"):
            path = transcript / name
            if path.exists():
                print(f"vm: ---- {name} (last 60 lines) ----")
                print("\n".join(path.read_text(errors="replace").splitlines()[-60:]))
        print(f"vm: the transcript (serial console, timeline, journal, commands) is in {transcript}")
    print(f"vm: {len(checks.results) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


class Scenario:
    """The test's steps, in order; `cleanup` undoes what they set up."""

    def __init__(self, deb, transcript, cache, checks, cleanup):
        self.deb = deb
        self.transcript = transcript
        self.cache = cache
        self.check = checks.check
        self.cleanup = cleanup
        # Scratch (image, root, packages) and the guest agent's socket, whose path must stay
        # short (108 bytes at most).
        self.scratch = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="ecs-patchd-vm-")))

    def run(self):
        tar = base_root(self.cache)
        self.start_host_side()
        image = build_image(self.scratch, tar, self.deb, self.standin, self.repo_url)
        self.check("dpkg's postinst enabled ecs-patchd.service (multi-user.target.wants)", image.unit_enabled)
        self.boot(image)
        self.reboot_cycle()
        self.stop_mid_transaction()
        self.self_upgrade()
        self.reinstall()
        self.readiness()
        self.watchdog()

    def start_host_side(self):
        """The stand-ins and the repository, which the image names."""
        standins = self.transcript / "standins"
        run([str(STANDINS / "start-standins.sh"), str(standins), "--cluster", CLUSTER, "--tasks", "3",
             "--peers", "1", "--lease-table", LEASE_TABLE, "--deactivating-seconds", str(DEACTIVATING_SECONDS),
             "--agent-start-seconds", "3"], env={**os.environ, "STANDIN_PYTHON": sys.executable})
        pid = int((standins / "standin.pid").read_text())
        self.cleanup.callback(os.kill, pid, signal.SIGTERM)
        self.standin = json.loads((standins / "standin.json").read_text())
        self.control = self.standin["moto_url"]
        self.arn = self.standin["container_instance_arn"]
        self.repo = self.scratch / "repo"
        publish(self.repo, demo_debs(self.scratch, 1))
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietFiles, directory=str(self.repo)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.cleanup.callback(server.shutdown)
        self.repo_url = f"http://{GATEWAY}:{server.server_address[1]}/"

    def boot(self, image):
        qga = self.scratch / "qga.sock"
        qemu_log = open(self.transcript / "qemu.log", "w")
        self.cleanup.callback(qemu_log.close)
        qemu = subprocess.Popen(
            ["qemu-system-x86_64", "-accel", "tcg", "-smp", "2", "-m", "1024", "-nographic", "-nodefaults",
             "-no-user-config", "-kernel", str(image.kernel), "-initrd", str(image.initrd),
             "-append", "root=/dev/vda rw console=ttyS0 systemd.show_status=1",
             "-drive", f"file={image.disk},format=raw,if=virtio",
             "-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0",
             "-chardev", f"socket,path={qga},server=on,wait=off,id=qga0",
             "-device", "virtio-serial", "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
             "-serial", f"file:{self.transcript / 'console.log'}", "-monitor", "none"],
            stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=subprocess.STDOUT)
        self.cleanup.callback(self.journal_from_disk, image.disk)
        self.cleanup.callback(stop_qemu, qemu)
        self.booted = time.time()
        self.guest = Guest(GuestAgent(qga), self.transcript)
        self.watch = Watch(self.control, self.guest, self.transcript, self.arn, qemu)
        self.cleanup.callback(self.collect_journal)
        self.cleanup.callback(self.watch.stop)
        self.watch.wait("the guest answers", lambda: self.guest.answers("true") is not None, 180)
        log(f"the guest is up after {time.time() - self.booted:.0f} s")
        # The guest's clock minus the host's (the middle of the call on the host).
        before = time.time()
        self.offset = float(self.guest.must("date +%s.%N")) - (before + time.time()) / 2
        self.watch.note(f"guest clock - host clock: {self.offset:+.2f} s")

    # ---- 1. the cycle the daemon starts by itself, through a real reboot -----------------
    def reboot_cycle(self):
        watch, guest, check = self.watch, self.guest, self.check
        watch.wait("the instance DRAINING", lambda: watch.latest() and watch.latest().status == "DRAINING",
                   CHECK_INTERVAL_SECONDS + 200)
        first_boot = watch.boots()[0]
        watch.wait("back: ACTIVE, after a new boot, slot released",
                   lambda: len(watch.boots()) >= 2 and watch.latest().status == "ACTIVE"
                   and not watch.latest().holders, 420)
        watch.wait("the cycle finished (ecs-patchd status)", guest.cycle_finished, 120)
        cycle = guest.cycle()
        check("the cycle ended patched and rebooted", cycle["summary"] == "done: 3 package(s) updated, rebooted",
              cycle["summary"])

        # Drained means every task stopped, not only their desired status.
        tasks = {t["arn"]: t for s in watch.ecs for t in s.tasks if t["container_instance_arn"] == self.arn}
        stopped = [t["stopped_at"] for t in tasks.values() if t["stopped_at"]]
        check("tasks were on the instance and all reached STOPPED", tasks and len(stopped) == len(tasks),
              f"{len(stopped)} of {len(tasks)}")
        installing = next((at for step, at in cycle["history"] if step == "installing"), None)
        if stopped and installing:
            install_at = installing - self.offset
            check("the install began only after every task had stopped", install_at >= max(stopped) - 0.5,
                  f"last task STOPPED {max(stopped) - self.booted:.1f} s after boot, install began at "
                  f"{install_at - self.booted:.1f} s")
        else:
            check("the install began only after every task had stopped", False,
                  "no task stopped" if not stopped else "no installing step in the cycle's history")

        boots = guest.must("journalctl --list-boots --no-pager | tail -n +2").splitlines()
        check("the guest rebooted once (two boot ids)", len(watch.boots()) == 2 and len(boots) == 2,
              f"boot ids seen: {len(watch.boots())}; journalctl --list-boots: {len(boots)}")

        # The resume is the daemon's first act at start, not left to a scheduled check.
        second = guest.must("journalctl -b 0 -u ecs-patchd --no-pager -o short-unix")
        started = line_time(second, "Started ecs-patchd.service")
        resumed = line_time(second, "resuming the cycle in progress")
        check(f"after the reboot, the daemon resumed within {RESUME_WITHIN_SECONDS} s of its start",
              started and resumed and 0 <= resumed - started <= RESUME_WITHIN_SECONDS,
              f"{resumed - started:.1f} s" if started and resumed else "not in the journal")
        # ...and set the instance ACTIVE soon after the agent reconnected.
        after_boot = [s for s in watch.ecs if s.at >= next(g.at for g in watch.seen if g.boot_id != first_boot) - 30]
        reconnected = next((b.at for a, b in zip(after_boot, after_boot[1:])
                            if not a.agent_connected and b.agent_connected), None)
        active = next((s.at for s in after_boot if reconnected and s.at >= reconnected and s.status == "ACTIVE"), None)
        check("ACTIVE within 10 s of the agent reconnecting", reconnected and active and active - reconnected <= 10,
              f"{active - reconnected:.1f} s" if reconnected and active else "no reconnection followed by ACTIVE")

        versions = guest.must("dpkg-query -W -f='${Package} ${Version}\\n' " + " ".join(PACKAGES)).splitlines()
        check("the updates are installed", set(versions) == {f"{name} {v[1]}" for name, v in PACKAGES.items()},
              "; ".join(versions))
        latest = watch.latest()
        check("the agent runs the new version", latest.agent_version == PACKAGES["amazon-ecs-init"][1],
              latest.agent_version)
        check("ACTIVE, agent connected, no slot held",
              latest.status == "ACTIVE" and latest.agent_connected and not latest.holders)
        lines = [s.status_line for s in watch.seen]
        (self.transcript / "status-lines.txt").write_text("\n".join(lines) + "\n")
        # The steps that last seconds (rebooting lasts until SIGTERM, a fraction of one).
        steps = ["draining", "installing", "waiting for the ECS agent to reconnect"]
        firsts = [next((i for i, line in enumerate(lines) if f": {step}" in line), None) for step in steps]
        check("systemctl status showed each step as it ran: " + ", ".join(steps),
              None not in firsts and firsts == sorted(firsts), str(dict(zip(steps, firsts))))
        shutdown = guest.must("journalctl -b -1 --no-pager -o cat -u ecs -u ecs-patchd")
        boot = guest.must("journalctl -b 0 --no-pager -o cat -u ecs -u ecs-patchd")
        check("systemd stopped the daemon before the agent, and started it after",
              in_order(shutdown, "Stopped ecs-patchd.service", "Stopping ecs.service")
              and in_order(boot, "Started ecs.service", "Starting ecs-patchd.service"))

    # ---- 2. systemctl stop during a slow package transaction -----------------------------
    def stop_mid_transaction(self):
        watch, guest, check = self.watch, self.guest, self.check
        publish(self.repo, [demo_deb(self.scratch, "demo-app", "3.0", SLOW_SCRIPTS)])
        watch.note("published demo-app 3.0, whose pre-install script is slow")
        watch.wait("demo-app 3.0's transaction running",
                   lambda: guest.answers("test -e /var/lib/demo-app/slow-started && echo yes") == "yes\n",
                   CHECK_INTERVAL_SECONDS + 120)
        cycle = guest.cycle()
        begun = time.monotonic()
        # In one command, so that nothing passes between the look and the stop.
        code, out, _ = guest.run("test -e /var/lib/demo-app/slow-finished || echo running; systemctl stop ecs-patchd",
                                 SLOW_SECONDS * 4)
        took = time.monotonic() - begun
        watch.note(f"systemctl stop returned {code} after {took:.1f} s")
        state = guest.run("dpkg-query -W -f='${Status} ${Version}\\n' demo-app; "
                          "test -e /var/lib/demo-app/slow-finished && echo finished; dpkg --audit; "
                          "systemctl is-active ecs-patchd")[1].splitlines()
        check("systemctl stop, sent mid-transaction, waited for it to finish",
              code == 0 and out == "running\n" and state == ["install ok installed 3.0", "finished", "inactive"],
              f"stop took {took:.1f} s; then: {'; '.join(state)}")
        now = guest.cycle()
        check("the cycle is unfinished after the stop", not now["finished"] and now["id"] == cycle["id"],
              now["summary"])

        # dpkg marks the package for removal (selection "deinstall") before its prerm refuses;
        # the package stays installed, and the next install of it sets the selection back.
        code, _, err = guest.run("dpkg -r ecs-patchd")
        kept = guest.must("dpkg-query -W -f='${db:Status-Status}' ecs-patchd; test -x /usr/bin/ecs-patchd && echo ' binary'")
        check("removing the package is refused while the cycle is unfinished",
              code != 0 and "a patch cycle is in progress" in err and kept == "installed binary\n",
              f"dpkg -r exited {code}; {kept.strip()}")

        guest.must("systemctl start ecs-patchd")
        pid = guest.unit("MainPID")["MainPID"]
        watch.wait("the cycle finished after the start", guest.cycle_finished, 120)
        end = guest.cycle()
        resumed = guest.must(f"journalctl _PID={pid} CYCLE={cycle['id']} --no-pager -o cat")
        check("the next start resumed the same cycle and ended it",
              end["id"] == cycle["id"] and end["summary"] == "done: 1 package(s) updated"
              and "resuming the cycle in progress" in resumed and len(watch.boots()) == 2, end["summary"])

    # ---- 3. ecs-patchd upgraded by its own cycle -----------------------------------------
    def self_upgrade(self):
        """The postinst runs in the daemon's cgroup and leaves the restart to the daemon, which
        runs the new binary in its own place once the cycle is done."""
        watch, guest, check = self.watch, self.guest, self.check
        newer, version = rebuilt(self.deb, self.scratch, "+vmtest1")
        publish(self.repo, [newer])
        watch.note(f"published {newer.name}")
        pid = guest.unit("MainPID")["MainPID"]
        watch.wait("ecs-patchd upgraded by its own cycle",
                   lambda: guest.answers("dpkg-query -W -f='${Version} ${db:Status-Status}' ecs-patchd")
                   == f"{version} installed", CHECK_INTERVAL_SECONDS + 120)
        watch.wait("the daemon running the new binary",
                   lambda: "running the new binary" in (guest.answers(
                       f"journalctl _PID={pid} --no-pager -o cat") or ""), 60)
        watch.wait("the cycle finished", guest.cycle_finished, 60)
        exe = guest.must(f"readlink /proc/{pid}/exe; systemctl is-active ecs-patchd").split()
        after = guest.unit("MainPID")["MainPID"]
        check("upgraded by its own cycle, the daemon runs the new binary (same pid, no stop)",
              exe == ["/usr/bin/ecs-patchd", "active"] and after == pid,
              f"MainPID {pid} -> {after}; /proc/{pid}/exe: {' '.join(exe)}")

    # ---- 4. an administrator's reinstall under live systemd ------------------------------
    def reinstall(self):
        pid = self.guest.unit("MainPID")["MainPID"]
        self.guest.must("DEBIAN_FRONTEND=noninteractive apt-get install -y --reinstall ecs-patchd", 120)
        after = self.guest.unit("MainPID", "ActiveState", "UnitFileState")
        self.check("apt-get install --reinstall over a running daemon restarts it (try-restart)",
                   (after["ActiveState"], after["UnitFileState"]) == ("active", "enabled")
                   and after["MainPID"] not in ("0", pid), f"MainPID {pid} -> {after}")

    # ---- 5. readiness: READY=1 only once the daemon knows which instance it is on --------
    def readiness(self):
        watch, guest = self.watch, self.guest
        control_call(self.control, "imds", {"refuse_token": True})
        watch.note("IMDS refuses tokens")
        guest.must("systemctl restart --no-block ecs-patchd")
        watch.wait("the daemon waiting for its identity",
                   lambda: watch.seen and "waiting for the instance identity" in watch.seen[-1].status_line, 60)
        state = guest.unit("ActiveState")
        self.check("without its identity (IMDS refusing tokens) the unit stays activating: no READY yet",
                   state == {"ActiveState": "activating"}, str(state))
        control_call(self.control, "imds", {"refuse_token": False})
        watch.note("IMDS answers again")
        answering = time.monotonic()
        watch.wait("the unit active once IMDS answers", lambda: guest.unit("ActiveState")["ActiveState"] == "active",
                   90)
        took = time.monotonic() - answering
        self.check("active within 10 s of IMDS answering (the daemon retries soon after boot)", took <= 10,
                   f"{took:.1f} s")

    # ---- 6. the watchdog: pings keep a live daemon, a wedged one is restarted ------------
    def watchdog(self):
        watch, guest = self.watch, self.guest
        # A runtime drop-in shortens the shipped 20 minutes, and the abort and restart delays.
        guest.must("mkdir -p /run/systemd/system/ecs-patchd.service.d && printf '[Service]\\nWatchdogSec=10s\\n"
                   "TimeoutAbortSec=5s\\nRestartSec=1s\\n' > /run/systemd/system/ecs-patchd.service.d/50-watchdog.conf"
                   " && systemctl daemon-reload && systemctl restart ecs-patchd")
        time.sleep(25)
        before = guest.unit("ActiveState", "NRestarts", "MainPID")
        self.check("with WatchdogSec=10s the daemon lives on for 25 s (its pings arrive)",
                   before["ActiveState"] == "active" and before["NRestarts"] == "0", str(before))
        guest.must("systemctl kill --kill-whom=main -s SIGSTOP ecs-patchd")
        watch.note("SIGSTOP to the daemon")

        def restarted():
            now = guest.unit("ActiveState", "MainPID")
            return now["ActiveState"] == "active" and now["MainPID"] != before["MainPID"]

        watch.wait("the wedged daemon restarted by the watchdog", restarted, 90)
        journal = guest.must("journalctl -u ecs-patchd -b --no-pager -o cat")
        after = guest.unit("NRestarts")
        self.check("a wedged daemon is killed by the watchdog and restarted",
                   "Watchdog timeout" in journal and after["NRestarts"] == "1", str(after))

    # ---- the transcript ------------------------------------------------------------------
    def collect_journal(self):
        """The journal excerpts, while the guest still runs."""
        out = self.guest.answers("journalctl --no-pager -o short-precise -u ecs-patchd -u ecs; "
                                 "journalctl --list-boots --no-pager", 60)
        if out:
            (self.transcript / "journal.txt").write_text(out)

    def journal_from_disk(self, disk):
        """When the guest could not give its journal (it did not come back), it is read from its
        disk once qemu has ended."""
        if (self.transcript / "journal.txt").exists() or not disk.exists():
            return
        journal = self.scratch / "journal"
        run(["debugfs", "-R", f"rdump /var/log/journal {self.scratch}", str(disk)])
        excerpt = subprocess.run(["journalctl", "--no-pager", "-o", "short-precise", "-D", str(journal)],
                                 capture_output=True, text=True)
        (self.transcript / "journal.txt").write_text(excerpt.stdout + excerpt.stderr)


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def stop_qemu(qemu):
    qemu.terminate()
    try:
        qemu.wait(timeout=30)
    except subprocess.TimeoutExpired:
        qemu.kill()
        qemu.wait()


def line_time(journal, text):
    """The time of the first line of a `-o short-unix` journal that contains `text`."""
    return next((float(line.split()[0]) for line in journal.splitlines() if text in line), None)


def in_order(text, first, then):
    """Whether a line containing `first` comes before one containing `then` in `text`."""
    lines = text.splitlines()
    a = next((i for i, line in enumerate(lines) if first in line), None)
    b = next((i for i, line in enumerate(lines) if then in line), None)
    return a is not None and b is not None and a < b


def run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, **kwargs)
    if result.returncode != 0:
        raise Failed(f"{' '.join(command)} exited {result.returncode}: "
                     f"{result.stderr.decode(errors='replace')[-2000:]}")


def log(what):
    print(f"vm: {what}", flush=True)


if __name__ == "__main__":
    main()
