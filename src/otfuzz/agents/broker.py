"""The broker both sides share: the Celery app, queue and key names, and what lives in Redis.

Celery carries the tasks (one queue per zone) and their states; Redis, which is Celery's broker
and result backend here, also holds what Celery has no place for: each agent's registration
(who is up, in which zone, running what), the lease an agent holds on the entry it runs, the
checkpoint of a running campaign (so another agent of the zone can resume it) and the finished
evidence bundles. Every key is under `otfuzz:`; bundles and results expire after a week.

Broker credentials come from the URL or the OTFUZZ_BROKER environment variable and are never
printed: every message shows `mask_url(url)`.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from otfuzz.errors import OtfuzzError

TASK_NAME = "otfuzz.run_entry"
TASK_VERSION = 1
KEEP_S = 7 * 24 * 3600  # results, bundles and checkpoints outlive a coordinator that is down for days
DEFAULT_REDELIVER_AFTER = 600.0
UNACKED_KEY = "unacked"  # kombu's Redis transport names, set explicitly so the lease can refresh them
UNACKED_INDEX_KEY = "unacked_index"
ENV_BROKER = "OTFUZZ_BROKER"


def mask_url(url: str) -> str:
    """The broker URL with any password replaced by ***, for messages and records."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable broker URL)"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_url(url: str | None) -> str:
    """The broker URL, refused unless it is a Redis URL (the lease and the bundles need Redis)."""
    if not url:
        raise OtfuzzError(f"give --broker URL (redis://HOST:6379/0) or set {ENV_BROKER}")
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss"):
        raise OtfuzzError(f"broker {mask_url(url)}: only redis:// and rediss:// brokers are supported (Redis is broker and "
                          "result backend, and holds leases and bundles)")
    return url


def zone_queue(zone: str) -> str:
    return f"otfuzz.zone.{zone}"


def agent_key(name: str) -> str:
    return f"otfuzz:agent:{name}"


def lease_key(plan_key: str, entry_id: str) -> str:
    return f"otfuzz:lease:{plan_key}:{entry_id}"


def checkpoint_key(plan_key: str, entry_id: str) -> str:
    return f"otfuzz:checkpoint:{plan_key}:{entry_id}"


def bundle_key(plan_key: str, entry_id: str) -> str:
    return f"otfuzz:bundle:{plan_key}:{entry_id}"


def zone_keys_key(zone: str) -> str:
    """The set of fingerprints of every agent that ever served `zone` (checkpoints they sign resume)."""
    return f"otfuzz:zone-keys:{zone}"


def connect(url: str, timeout: float = 3.0) -> Any:
    """A Redis client for `url`, refused in one line if the broker does not answer now."""
    import redis

    check_url(url)
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=max(timeout, 10.0),
                                      health_check_interval=30)
        client.ping()
    except (redis.exceptions.RedisError, OSError, ValueError) as exc:
        reason = str(exc).split("\n")[0] or type(exc).__name__
        raise OtfuzzError(f"broker {mask_url(url)} is unreachable ({reason}); start Redis there or fix --broker") from None
    return client


def make_app(url: str, redeliver_after: float = DEFAULT_REDELIVER_AFTER) -> Any:
    """The Celery app of agents and coordinator alike: Redis broker and backend, late acks.

    Late acknowledgement keeps a task's message in the broker's unacknowledged set until the
    agent has finished it; the transport hands it to another consumer once it has been there
    for `redeliver_after` seconds. A running agent keeps refreshing its own message's time there
    (see worker.Lease), so only a dead agent's task is redelivered.
    """
    from celery import Celery

    app = Celery("otfuzz", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"], result_accept_content=["json"],
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_track_started=True, result_expires=KEEP_S,
        broker_connection_retry=True, broker_connection_max_retries=None, broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": redeliver_after, "unacked_key": UNACKED_KEY, "unacked_index_key": UNACKED_INDEX_KEY,
            "unacked_restore_interval": max(0.5, min(10.0, redeliver_after / 4)), "unacked_restore_throttle": 1,
        },
        result_backend_transport_options={"retry_policy": {"timeout": 5.0}},
        worker_hijack_root_logger=False, worker_redirect_stdouts=False, worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app


def list_agents(client: Any) -> list[dict[str, Any]]:
    """Every agent registered now (each refreshes its record while it lives), by zone then name."""
    out = []
    for key in client.scan_iter(match=agent_key("*"), count=500):
        raw = client.get(key)
        if raw:
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            record["seen_s_ago"] = round(max(0.0, time.time() - float(record.get("seen", 0))), 1)
            out.append(record)
    return sorted(out, key=lambda r: (str(r.get("zone")), str(r.get("name"))))


def get_json(client: Any, key: str) -> dict[str, Any] | None:
    raw = client.get(key)
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def dispatch_zone(kind: str, zone: str, from_zones: list[str]) -> str:
    """The zone whose agent runs an entry: the asset's zone for fuzzing, the conduit's outer zone
    for a policy test (it sends through the conduit from where the clients are)."""
    if kind == "policy" and from_zones:
        return from_zones[0]
    return zone
