"""Schemathesis hooks for keyport's API checks (loaded by fuzz.py through SCHEMATHESIS_HOOKS).

- Most generated requests act on the objects fuzz.py seeded (a connection, a user, a webhook, …)
  rather than on random ids, so that operations get past "not found" and their answers are
  checked; the rest keep the generated values.
- Every request comes from its own client address (`X-Forwarded-For`, honoured because the host
  trusts 127.0.0.1 as a proxy): generated sign-ins with wrong passwords would otherwise block the
  fuzzer's own address after ten failures, and every later answer would be 429.
- Every answer is counted by status, for fuzz.py's summary and its request floor.
"""

import atexit
import collections
import json
import os
import random

import schemathesis

SEEDS = json.loads(os.environ.get("KEYPORT_FUZZ_SEEDS", "{}"))
STATS_FILE = os.environ.get("KEYPORT_FUZZ_STATS")
RNG = random.Random(7)
STATS = {
    "requests": 0,
    "by_status": collections.Counter(),
    "by_operation": collections.defaultdict(collections.Counter),
}

# Path parameter -> seeded value, by the path's prefix (longest first).
SUBSTITUTES = [
    ("/api/v1/connections/", {"id": "connection", "dep": "dependent"}),
    ("/api/v1/connection-requests/", {"id": "request"}),
    ("/api/v1/connectors/", {"id": "connector"}),
    ("/api/v1/provider-apps/", {"connector": "connector"}),
    ("/api/v1/workspaces/", {"ws": "workspace", "user": "user"}),
    ("/api/v1/users/", {"id": "user"}),
    ("/api/v1/invitations/", {"id": "invitation"}),
    ("/api/v1/api-keys/", {"id": "api_key"}),
    ("/api/v1/webhooks/", {"id": "webhook"}),
    ("/api/v1/admin/providers/", {"id": "provider"}),
    ("/api/v1/admin/connectors/", {"id": "connector"}),
    ("/api/v1/admin/catalogue/", {"id": "catalogue_entry"}),
]


@schemathesis.hook
def before_call(ctx, case, kwargs):
    path = case.operation.path
    if case.path_parameters and RNG.random() < 0.75:
        for prefix, names in SUBSTITUTES:
            if path.startswith(prefix):
                for name, seed in names.items():
                    if name in case.path_parameters and seed in SEEDS:
                        case.path_parameters[name] = SEEDS[seed]
                break
    headers = dict(case.headers or {})
    if RNG.random() < 0.8:
        headers.pop("X-Keyport-Workspace", None)
        headers.pop("X-Keyport-User", None)
    headers["X-Forwarded-For"] = "198.51.100.%d, 10.%d.%d.%d" % tuple(
        RNG.randrange(256) for _ in range(4)
    )
    case.headers = headers


@schemathesis.hook
def after_call(ctx, case, response):
    STATS["requests"] += 1
    STATS["by_status"][response.status_code] += 1
    operation = f"{case.operation.method.upper()} {case.operation.path}"
    STATS["by_operation"][operation][response.status_code] += 1


@atexit.register
def _write_stats():
    if STATS_FILE:
        with open(STATS_FILE, "w") as f:
            json.dump(
                {
                    "requests": STATS["requests"],
                    "by_status": {str(k): v for k, v in sorted(STATS["by_status"].items())},
                    "by_operation": {
                        op: {str(k): v for k, v in sorted(c.items())}
                        for op, c in sorted(STATS["by_operation"].items())
                    },
                },
                f,
                indent=1,
            )
