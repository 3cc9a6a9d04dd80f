"""``plantnotify why ANALYSIS_ID`` · ``plantnotify why --user USER_ID``: support's answer to
"why didn't I get a notification?".

The analysis form prints its delivery timeline (``plantnotify/timeline.py``, the same one
``GET /plantanalyses/{id}/delivery`` gives the owner) with the trace id to look up in a tracing
backend. The user form prints the user's reachability now: live MQTT sessions (the broker's
sessions picture, asked for with a service token), registered devices and their last push
result, the last receipts, and the last analyses with their delivery outcome. ``--json`` prints
the same as one JSON document.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from typing import Any

from plantnotify.contracts.ids import is_valid_user_id
from plantnotify.db.session import engine_for, session_factory
from plantnotify.settings import Settings, load_settings
from plantnotify.timeline import DeliveryTimeline, UserReport, analysis_timeline, user_report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("analysis_id", nargs="?", metavar="ANALYSIS_ID", help="an analysis id")
    parser.add_argument("--user", metavar="USER_ID", help="a user's reachability instead")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument(
        "--broker-timeout",
        type=float,
        default=3.0,
        help="seconds to wait for the broker's session snapshot (--user)",
    )


def run(args: argparse.Namespace) -> int:
    if bool(args.analysis_id) == bool(args.user):
        print(
            "plantnotify why: give an ANALYSIS_ID or --user USER_ID (one of them)", file=sys.stderr
        )
        return 2
    settings = load_settings()
    sessions = session_factory(engine_for(settings.database_url))
    if args.user:
        if not is_valid_user_id(args.user):
            print(f"plantnotify why: {args.user!r} is not a user id", file=sys.stderr)
            return 2
        with sessions() as session:
            report = user_report(session, args.user)
        live = live_sessions(settings, args.user, args.broker_timeout)
        if args.json:
            doc = report.to_wire()
            doc["liveSessions"] = live
            print(json.dumps(doc, indent=2))
        else:
            print(render_user(report, live))
        return 0
    with sessions() as session:
        timeline = analysis_timeline(session, args.analysis_id)
    if timeline is None:
        print(f"plantnotify why: no analysis {args.analysis_id!r}", file=sys.stderr)
        return 1
    print(json.dumps(timeline.to_wire(), indent=2) if args.json else render_timeline(timeline))
    return 0


def live_sessions(settings: Settings, user_id: str, timeout: float) -> dict[str, Any]:
    """The broker's picture of the user's live connections, or why it could not be read."""
    from plantnotify.broker.picture import online_client_ids  # paho only for --user
    from plantnotify.mqtt import MqttError

    try:
        client_ids = sorted(online_client_ids(settings, "why", user_id, timeout=timeout))
    except (MqttError, OSError, ValueError) as exc:
        return {"known": False, "why": f"the broker's sessions picture is unreadable: {exc}"}
    return {"known": True, "connections": len(client_ids), "clientIds": client_ids}


def _t(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z" if at else "-"


def _detail(detail: dict[str, Any]) -> str:
    keep = {k: v for k, v in detail.items() if v not in (None, [], {}, "")}
    attempts = keep.pop("attempts", None)
    text = " ".join(f"{k}={v}" for k, v in keep.items())
    if attempts:
        text += " attempts=" + ",".join(
            f"{a['outcome']}{'/' + str(a['httpStatus']) if a.get('httpStatus') else ''}"
            for a in attempts
        )
    return text


def render_timeline(tl: DeliveryTimeline) -> str:
    lines = [
        f"analysis {tl.analysis_id}  status {tl.status}  trace {tl.trace_id or '-'}",
        f"outcome: {tl.outcome}",
        "",
    ]
    start = tl.steps[0].at if tl.steps else None
    for step in tl.steps:
        offset = f"+{(step.at - start).total_seconds():8.3f}s" if start else ""
        who = f" [{step.device}]" if step.device else ""
        lines.append(
            f"{_t(step.at)} {offset}  {step.source:<6} {step.step:<14}{who} {_detail(step.detail)}"
        )
    return "\n".join(lines)


def render_user(report: UserReport, live: dict[str, Any]) -> str:
    lines = [f"user {report.user_id} at {_t(report.at)}", ""]
    if live.get("known"):
        ids = ", ".join(live.get("clientIds", [])) or "-"
        lines.append(f"live MQTT sessions now: {live.get('connections', 0)} ({ids})")
    else:
        lines.append(f"live MQTT sessions now: unknown ({live.get('why')})")
    lines.append("")
    lines.append(f"registered devices: {len(report.devices)}")
    for d in report.devices:
        last = (
            f"last push {d.last_push_status} at {_t(d.last_push_at)}"
            + (f" ({d.last_push_error})" if d.last_push_error else "")
            if d.last_push_status
            else "never pushed"
        )
        lines.append(f"  {d.device}  registered {_t(d.registered_at)}  {last}")
    lines.append("")
    lines.append(f"last receipts: {len(report.last_receipts)}")
    for r in report.last_receipts:
        lines.append(f"  {_t(r.at)} [{r.device or '?'}] {_detail(r.detail)}")
    lines.append("")
    lines.append(f"last {len(report.analyses)} analyses:")
    for a in report.analyses:
        lines.append(
            f"  {_t(a.created_at)} {a.analysis_id} {a.status:<10} trace {a.trace_id or '-'}: "
            f"{a.outcome}"
        )
    return "\n".join(lines)
