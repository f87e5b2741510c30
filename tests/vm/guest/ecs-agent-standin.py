#!/usr/bin/python3
"""The ECS agent inside the test VM, run by systemd as `ecs.service` (its name on Amazon Linux).

The agent's ECS side lives in the host's stand-in (tests/standins/aws_standin.py), which this
process drives as a real agent would drive ECS:
- at start it reports the installed agent package's version, and the stand-in connects the
  container instance a moment later (--agent-start-seconds), as a registering agent does;
- it serves the introspection API on 127.0.0.1:51678 (ecs-patchd's identity.agent_url) by
  relaying to the stand-in's, and answers nothing while the stand-in says the agent is down;
- on SIGTERM (`systemctl stop|restart ecs`, a reboot) it reports the agent down, as the
  agent's connection to ECS closes.

usage: ecs-agent-standin.py CONTROL_URL AGENT_URL   (the host's stand-in, as the guest reaches it)
"""

import signal
import socket
import subprocess
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standin_ctl import call  # tests/standins/standin_ctl.py, installed beside this file

CONTROL, AGENT = sys.argv[1], sys.argv[2]


class Introspection(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        try:
            with urllib.request.urlopen(AGENT + self.path, timeout=5) as upstream:
                body = upstream.read()
        except Exception:
            # The agent is down (or not up yet): like a stopped agent, answer nothing.
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "amazon-ecs-init"],
                             capture_output=True, text=True, check=True).stdout
    server = ThreadingHTTPServer(("127.0.0.1", 51678), Introspection)
    server.daemon_threads = True

    def stop(*_):
        call(CONTROL, "agent/stop")
        print("ecs agent stand-in: stopped", flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    call(CONTROL, "agent/start", {"version": version})
    print(f"ecs agent stand-in: agent {version} starting", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
