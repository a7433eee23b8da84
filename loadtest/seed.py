#!/usr/bin/env python3
"""Seeds a StatusPulse Auth engine for the load tests (Python 3.11 standard library only).

Creates N workspaces, each with one live API key holding `checks:read`, through the admin
API, and writes the full keys to a file, one per line, in workspace order.

    seed.py --count 5000 --out keys.txt          # many workspaces, one key each
    seed.py --single --out flood-key.txt         # one workspace with one live key

The admin URL and token come from --admin-url / --admin-token or the environment
(STATUSPULSE_ADMIN_URL, default http://127.0.0.1:8081; STATUSPULSE_ADMIN_TOKEN). Only
loopback addresses are accepted: this tool is for a server running on this machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import ipaddress
import json
import os
import sys
import threading
import time
import urllib.parse

SCOPES = ["checks:read"]
RETRIES = 3


class SeedError(Exception):
    pass


class AdminClient:
    """One keep-alive HTTP connection per thread to the admin listener."""

    def __init__(self, base_url: str, token: str, timeout: float) -> None:
        parsed = urllib.parse.urlsplit(base_url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise SeedError(f"admin URL must be http://HOST:PORT, got {base_url!r}")
        if not is_loopback(parsed.hostname):
            raise SeedError(f"refusing non-loopback admin URL {base_url!r}")
        self.host = parsed.hostname
        self.port = parsed.port or 80
        self.prefix = parsed.path.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.local.conn = conn
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            conn.close()
        self.local.conn = None

    def post(self, path: str, body: dict) -> dict:
        payload = json.dumps(body).encode()
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        last_error = ""
        for attempt in range(RETRIES):
            try:
                conn = self._connection()
                conn.request("POST", self.prefix + path, body=payload, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as e:
                # A dropped keep-alive connection: reconnect and try again.
                self._drop_connection()
                last_error = f"{type(e).__name__}: {e}"
                time.sleep(0.05 * (attempt + 1))
                continue
            if response.getheader("Connection", "").lower() == "close":
                self._drop_connection()
            if response.status == 201:
                try:
                    return json.loads(data)
                except json.JSONDecodeError as e:
                    raise SeedError(f"POST {path}: response is not JSON: {e}") from e
            text = data[:300].decode(errors="replace")
            if response.status in (502, 503, 504):
                last_error = f"HTTP {response.status}: {text}"
                time.sleep(0.1 * (attempt + 1))
                continue
            raise SeedError(f"POST {path}: HTTP {response.status}: {text}")
        raise SeedError(f"POST {path}: gave up after {RETRIES} attempts: {last_error}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_workspace_with_key(client: AdminClient, name: str) -> str:
    workspace = client.post("/admin/v1/workspaces", {"name": name})
    ws_id = workspace.get("id")
    if not isinstance(ws_id, str) or not ws_id:
        raise SeedError(f"workspace response without id: {workspace!r}")
    created = client.post(
        f"/admin/v1/workspaces/{ws_id}/api-keys",
        {"label": f"{name}-key", "environment": "live", "scopes": SCOPES},
    )
    key = created.get("key")
    if not isinstance(key, str) or not key.startswith("sp_live_"):
        raise SeedError(f"api-key response without a live key for {ws_id}")
    return key


def seed(client: AdminClient, count: int, prefix: str, concurrency: int) -> list[str]:
    keys: list[str | None] = [None] * count
    done = 0
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = {
            pool.submit(create_workspace_with_key, client, f"{prefix}-{i:06d}"): i
            for i in range(count)
        }
        try:
            for future in concurrent.futures.as_completed(futures):
                keys[futures[future]] = future.result()
                done += 1
                if count >= 1000 and done % 1000 == 0:
                    rate = done / max(time.monotonic() - started, 1e-9)
                    print(f"seed: {done}/{count} workspaces ({rate:.0f}/s)", file=sys.stderr)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return [k for k in keys if k is not None]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--admin-url", default=os.environ.get("STATUSPULSE_ADMIN_URL", "http://127.0.0.1:8081"))
    parser.add_argument("--admin-token", default=os.environ.get("STATUSPULSE_ADMIN_TOKEN"),
                        help="admin bearer token (default: $STATUSPULSE_ADMIN_TOKEN)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--count", type=int, default=5000, help="workspaces to create (default 5000)")
    mode.add_argument("--single", action="store_true", help="create one workspace with one live key")
    parser.add_argument("--out", required=True, help="file to write the keys to, one per line")
    parser.add_argument("--prefix", default=None, help="workspace name prefix")
    parser.add_argument("--concurrency", type=int, default=16, help="parallel requests (default 16)")
    parser.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds")
    args = parser.parse_args()

    if not args.admin_token:
        parser.error("no admin token: pass --admin-token or set STATUSPULSE_ADMIN_TOKEN")
    count = 1 if args.single else args.count
    if count < 1:
        parser.error("--count must be at least 1")
    prefix = args.prefix or ("loadtest-flood" if args.single else "loadtest")

    started = time.monotonic()
    try:
        client = AdminClient(args.admin_url, args.admin_token, args.timeout)
        keys = seed(client, count, prefix, max(1, args.concurrency))
    except SeedError as e:
        print(f"seed: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    if len(keys) != count:
        print(f"seed: error: created {len(keys)} of {count} keys", file=sys.stderr)
        return 1

    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write("\n".join(keys) + "\n")
    os.replace(tmp, args.out)
    elapsed = time.monotonic() - started
    print(f"seed: {count} workspace(s) with one live key each in {elapsed:.1f}s -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
