#!/usr/bin/env python3
"""Talks to the stand-ins' control API (stdlib only, so host-side scripts, the VM test and its
guest can use it). As a command it prints the answer; `call` returns it parsed.

usage: standin_ctl.py URL PATH [JSON-BODY]   e.g. standin_ctl.py http://127.0.0.1:5000 agent/stop
"""
import json
import sys
import urllib.request


def send(url, path, body=b"{}"):
    """POSTs `body` (JSON bytes) to the control path `path`; returns the answer's bytes."""
    request = urllib.request.Request(f"{url.rstrip('/')}/_standin/{path}", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


def call(url, path, body=None):
    """POSTs `body` (a JSON value) to the control path `path`; returns the parsed answer."""
    return json.loads(send(url, path, json.dumps(body or {}).encode()))


if __name__ == "__main__":
    print(send(sys.argv[1], sys.argv[2], sys.argv[3].encode() if len(sys.argv) > 3 else b"{}").decode())
