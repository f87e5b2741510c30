#!/usr/bin/env python3
"""Talks to the stand-ins' control API (stdlib only, so host-side scripts can use it).

usage: standin_ctl.py URL PATH [JSON-BODY]   e.g. standin_ctl.py http://127.0.0.1:5000 agent/stop
"""
import sys
import urllib.request

url, path = sys.argv[1].rstrip("/"), sys.argv[2]
body = sys.argv[3].encode() if len(sys.argv) > 3 else b"{}"
request = urllib.request.Request(f"{url}/_standin/{path}", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
print(urllib.request.urlopen(request, timeout=10).read().decode())
