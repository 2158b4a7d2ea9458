"""keyport's API checks: Schemathesis against a live `keyport serve`, inside a network namespace
that has nothing but loopback, so that no generated request can make the host send a packet
anywhere else (provider discovery, webhooks and API-key checks all reach for the network).

Run by host/tests/openapi.rs as `unshare -n .venv/bin/python fuzz.py KEYPORT_BIN OUT_DIR`:

1. brings `lo` up and checks that it is the namespace's only interface;
2. starts `keyport serve` on 127.0.0.1 with fresh embedded storage;
3. validates `GET /api/v1/openapi.json` with openapi-spec-validator (OpenAPI 3.1);
4. seeds a workspace, a user, a provider app, a pending connection, a connection request, an
   invitation, an API key, a webhook and a custom provider through the API, so that generated
   requests reach real objects (hooks.py);
5. runs Schemathesis (examples, coverage and fuzzing phases) with the checks: no 5xx, status
   codes, content types, response headers and bodies as documented;
6. fails when Schemathesis reports anything, when fewer than KEYPORT_FUZZ_MIN_REQUESTS requests
   were made (default 1000), or when the host's log shows a panic.
"""

import base64
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent
ADMIN = "kp_admin_fuzz_0123456789abcdef"
MASTER_KEYS = "k1:" + base64.b64encode(bytes([7] * 32)).decode()


def fail(message):
    print(f"fuzz.py: {message}", file=sys.stderr)
    sys.exit(2)


def isolate():
    r = subprocess.run(["ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"could not bring up loopback in the namespace ({r.stderr.strip()}); run this under `unshare -n` as root or `unshare -rn`")
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    interfaces = sorted(line.split(":")[1].strip() for line in links.splitlines() if ":" in line)
    if interfaces != ["lo"]:
        fail(f"refusing to fuzz outside an isolated network namespace (interfaces: {interfaces}); run under `unshare -n`")


def start_keyport(binary, data):
    env = dict(os.environ)
    for k in ("KEYPORT_DATABASE_URL", "KEYPORT_PUBLIC_URL", "KEYPORT_SMTP_URL"):
        env.pop(k, None)
    env.update(
        KEYPORT_ADMIN_TOKEN=ADMIN,
        KEYPORT_MASTER_KEYS=MASTER_KEYS,
        KEYPORT_TRUSTED_PROXIES="127.0.0.1/32",
        RUST_LOG="warn",
        NO_COLOR="1",
    )
    log = open(data / "keyport.log", "w+")
    proc = subprocess.Popen(
        [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data / "data")],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        text = (data / "keyport.log").read_text()
        m = re.search(r"keyport is running\. Open (http://127\.0\.0\.1:\d+)", text)
        if m:
            return proc, m.group(1), data / "keyport.log"
        if proc.poll() is not None:
            fail(f"keyport serve exited:\n{text}")
        time.sleep(0.1)
    proc.kill()
    fail("keyport serve did not start within 120 s")


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {ADMIN}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            text = r.read().decode()
            return r.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read().decode() or "null")


def seed(base):
    def must(method, path, body=None, status=(200, 201)):
        s, v = call(base, method, path, body)
        if s not in status:
            fail(f"seeding {method} {path} answered {s}: {v}")
        return v

    seeds = {"workspace": "default", "connector": "slack", "catalogue_entry": "github"}
    must("POST", "/api/v1/workspaces", {"id": "acme", "name": "Acme"})
    seeds["user"] = must(
        "POST",
        "/api/v1/users",
        {"email": "ada@example.com", "password": "correct horse battery staple", "role": "member"},
    )["id"]
    must("PUT", "/api/v1/provider-apps/slack", {"client_id": "fuzz-client", "client_secret": "fuzz-secret"})
    seeds["connection"] = must("POST", "/api/v1/connections/oauth/start", {"connector": "slack"})["connection_id"]
    seeds["dependent"] = "workflow-1"
    must("PUT", f"/api/v1/connections/{seeds['connection']}/dependents/workflow-1", status=(200, 201))
    seeds["request"] = must(
        "POST", "/api/v1/connection-requests", {"client_email": "client@example.com", "connector": "slack"}
    )["connection_requests"][0]["id"]
    seeds["invitation"] = must("POST", "/api/v1/invitations", {"email": "bob@example.com"})["id"]
    seeds["api_key"] = must("POST", "/api/v1/api-keys", {"name": "fuzz"})["id"]
    seeds["webhook"] = must(
        "POST", "/api/v1/webhooks", {"url": "https://hooks.example.com/keyport", "events": ["*"]}
    )["id"]
    seeds["provider"] = must(
        "POST",
        "/api/v1/admin/providers",
        {
            "id": "fuzzco",
            "display_name": "Fuzz Co",
            "authorization_url": "https://id.fuzzco.example/authorize",
            "token_url": "https://id.fuzzco.example/token",
            "scopes": ["read"],
            "api_base_url": "https://api.fuzzco.example/",
            "userinfo": {"url": "https://api.fuzzco.example/me", "id": "id", "name": "name"},
        },
    )["id"]
    return seeds


def main():
    if len(sys.argv) != 3:
        fail("usage: fuzz.py KEYPORT_BIN OUT_DIR")
    binary, out = sys.argv[1], pathlib.Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    examples = os.environ.get("KEYPORT_FUZZ_EXAMPLES", "12")
    minimum = int(os.environ.get("KEYPORT_FUZZ_MIN_REQUESTS", "1000"))
    isolate()
    with tempfile.TemporaryDirectory() as tmp:
        proc, base, log = start_keyport(binary, pathlib.Path(tmp))
        try:
            from openapi_spec_validator import validate

            with urllib.request.urlopen(base + "/api/v1/openapi.json", timeout=30) as r:
                if r.headers.get_content_type() != "application/json":
                    fail(f"openapi.json is served as {r.headers.get_content_type()}")
                doc = json.load(r)
            if not doc.get("openapi", "").startswith("3.1"):
                fail(f"the document is OpenAPI {doc.get('openapi')}, not 3.1")
            validate(doc)
            operations = sum(
                1 for item in doc["paths"].values() for m in item if m in ("get", "put", "post", "patch", "delete", "head", "options")
            )
            print(f"openapi-spec-validator: the document is valid OpenAPI {doc['openapi']} ({len(doc['paths'])} paths, {operations} operations)")
            seeds = seed(base)
            stats = out / "stats.json"
            env = dict(os.environ)
            env.update(
                SCHEMATHESIS_HOOKS="hooks",
                PYTHONPATH=str(HERE),
                KEYPORT_FUZZ_SEEDS=json.dumps(seeds),
                KEYPORT_FUZZ_STATS=str(stats),
                NO_COLOR="1",
            )
            st = pathlib.Path(sys.executable).parent / "st"
            cmd = [
                str(st), "run", base + "/api/v1/openapi.json",
                "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
                "--header", f"Authorization: Bearer {ADMIN}",
                "--phases", "examples,coverage,fuzzing",
                "--max-examples", examples,
                "--workers", "1",  # threads hit a CPython 3.11 bug in ast.parse (SystemError: AST constructor recursion depth mismatch)
                "--seed", os.environ.get("KEYPORT_FUZZ_SEED", "20261207"),
                "--request-timeout", "30",
                "--report", "junit",
                "--report-dir", str(out),
            ]
            print("running:", " ".join(c if "Bearer" not in c else "Authorization: Bearer …" for c in cmd), flush=True)
            code = subprocess.run(cmd, env=env, cwd=HERE).returncode
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        text = log.read_text()
        (out / "keyport.log").write_text(text)
    if not stats.exists():
        fail("Schemathesis wrote no statistics (hooks.py did not run)")
    s = json.loads(stats.read_text())
    ok = [op for op, c in s["by_operation"].items() if any(k.startswith("2") for k in c)]
    print(f"requests: {s['requests']}; answers by status: {s['by_status']}")
    print(f"operations that answered 2xx at least once: {len(ok)} of {operations}; the others answered:")
    for op, c in s["by_operation"].items():
        if op not in ok:
            print(f"  {op}: {c}")
    problems = []
    if code != 0:
        problems.append(f"Schemathesis reported failures (exit {code}); see its output above")
    if s["requests"] < minimum:
        problems.append(f"only {s['requests']} requests were made; at least {minimum} are required")
    if "panicked" in text:
        problems.append("the host panicked; see keyport.log in " + str(out))
    if problems:
        fail("; ".join(problems))
    print("fuzz.py: no findings")


if __name__ == "__main__":
    main()
