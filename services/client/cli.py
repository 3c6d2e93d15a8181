"""`aragog`: the command line on the Python SDK.

    aragog register my-workflow.yaml
    aragog workflows
    aragog submit my-workflow "How many orders shipped in May?" --watch [--policy largest]
    aragog submit "" "How many orders shipped in May?" --session s1   # the front door picks
    aragog status <request id>
    aragog cancel <request id>
    aragog requests [--tenant T] [--limit N]
    aragog deprecate <workflow id>
    aragog outcome <request id> <reward 0..1>

`--router` (or ARAGOG_ROUTER) names the router, default 127.0.0.1:50051; `--tls`, `--ca`
and `--token` (or ARAGOG_TOKEN) secure the call; `--json` prints protobuf JSON. Exit status:
0 done, 1 the request failed, 2 the router refused the call (the message says why).
"""

from __future__ import annotations

import argparse
import os
import sys

from aragog.client import AragogError, Client
from aragog.v1 import common_pb2
from google.protobuf.json_format import MessageToJson

STATES = {
    v.number: v.name.removeprefix("REQUEST_STATE_").lower()
    for v in common_pb2.RequestState.DESCRIPTOR.values
}


def _print_status(s: common_pb2.RequestStatus) -> None:
    print(
        f"{s.request_id}: {STATES.get(s.state, s.state)} (workflow {s.workflow_id}, policy "
        f"{s.policy}, |F(r)| {s.admitted_configurations})"
    )
    for st in s.stages:
        print(f"  {st.stage}: {st.model or 'tool'}")
    if s.answer:
        print(f"answer: {s.answer}")
    if s.error:
        print(f"error: {s.error}")


def _event_line(e) -> str:
    kind = e.WhichOneof("event")
    if kind == "admitted":
        a = e.admitted
        how = f" ({a.intent.route} route)" if a.intent.route else ""
        return (f"admitted {e.request_id}: workflow {a.workflow_id}{how}, policy {a.policy}, "
                f"|F(r)| {a.configurations}")
    if kind == "stage_started":
        return f"stage {e.stage_started.stage} started on {e.stage_started.model}"
    if kind == "stage_finished":
        return f"stage {e.stage_finished.stage} finished on {e.stage_finished.model}"
    return "completed"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="aragog", description=__doc__.split("\n\n")[0])
    ap.add_argument("--router", default=os.environ.get("ARAGOG_ROUTER", "127.0.0.1:50051"))
    ap.add_argument("--tls", action="store_true", help="TLS with the system's root certificates")
    ap.add_argument("--ca", help="PEM file of the root certificate to trust (implies --tls)")
    ap.add_argument("--token", default=os.environ.get("ARAGOG_TOKEN"), help="bearer token")
    ap.add_argument("--json", action="store_true", help="print protobuf JSON")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("register", help="register a workflow YAML")
    p.add_argument("file")
    sub.add_parser("workflows", help="list the registered workflows")
    p = sub.add_parser("submit", help="submit a request and wait for its answer")
    p.add_argument("workflow", help="a registered workflow; '' lets the router's front door "
                   "choose one by the input's intent")
    p.add_argument("input", help="the request's input ('-': read it from stdin)")
    p.add_argument("--session", default="", help="the conversation it belongs to (the front "
                   "door keeps a session on its workflow)")
    p.add_argument("--policy", default="")
    p.add_argument("--tenant", default="")
    p.add_argument("--request-id", default="")
    p.add_argument("--watch", action="store_true", help="print each event as it happens")
    p = sub.add_parser("status", help="a request's status")
    p.add_argument("request_id")
    p = sub.add_parser("cancel", help="cancel a request (its status after)")
    p.add_argument("request_id")
    p = sub.add_parser("requests", help="a tenant's requests, newest first")
    p.add_argument("--tenant", default="", help="default: requests without a tenant, or yours")
    p.add_argument("--limit", type=int, default=20)
    p = sub.add_parser("deprecate", help="refuse new requests for a workflow")
    p.add_argument("workflow_id")
    p = sub.add_parser("outcome", help="how good a request's answer was (0 wrong .. 1 right)")
    p.add_argument("request_id")
    p.add_argument("reward", type=float)
    args = ap.parse_args(argv)
    ca = open(args.ca, "rb").read() if args.ca else None  # noqa: SIM115
    try:
        with Client(args.router, tls=args.tls, root_certificates=ca, token=args.token) as c:
            if args.cmd == "register":
                with open(args.file, encoding="utf-8") as f:
                    reg = c.register_workflow(f.read())
                print(
                    MessageToJson(reg)
                    if args.json
                    else f"registered {reg.workflow.id}: {reg.configurations} configurations"
                )
            elif args.cmd == "workflows":
                for wf in c.list_workflows():
                    print(
                        MessageToJson(wf)
                        if args.json
                        else f"{wf.id}: {', '.join(s.name for s in wf.stages)}"
                    )
            elif args.cmd == "requests":
                page = c.list_requests(args.tenant, args.limit)
                for r in page.requests:
                    print(MessageToJson(r, indent=None) if args.json else
                          f"{r.request_id}: {STATES.get(r.state, r.state)} "
                          f"({r.workflow_id}, {r.policy})")
            elif args.cmd == "outcome":
                model = c.report_outcome(args.request_id, args.reward)
                print(f"outcome of {args.request_id} credited to {model}")
            elif args.cmd == "deprecate":
                wf = c.deprecate_workflow(args.workflow_id)
                print(MessageToJson(wf) if args.json else f"deprecated {wf.id}")
            elif args.cmd in ("status", "cancel"):
                s = (c.status if args.cmd == "status" else c.cancel)(args.request_id)
                print(MessageToJson(s)) if args.json else _print_status(s)
                return 1 if s.state == common_pb2.REQUEST_STATE_FAILED else 0
            else:
                text = sys.stdin.read() if args.input == "-" else args.input
                final = None
                for e in c.submit(
                    args.workflow,
                    text,
                    policy=args.policy,
                    tenant=args.tenant,
                    request_id=args.request_id,
                    session_id=args.session,
                ):
                    if args.watch:
                        print(
                            MessageToJson(e, indent=None) if args.json else _event_line(e),
                            flush=True,
                        )
                    if e.WhichOneof("event") == "completed":
                        final = e.completed
                if final is None:
                    raise AragogError("the stream ended before the request completed")
                if not args.watch or not args.json:
                    print(MessageToJson(final)) if args.json else _print_status(final)
                return 0 if final.state == common_pb2.REQUEST_STATE_SUCCEEDED else 1
    except AragogError as e:
        print(f"aragog: {e.code.name}: {e.details}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"aragog: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
