"""`aragog-models`: change the pool while it serves, through the active scheduler.

    aragog-models state
    aragog-models unload llama3-70b [--wait]
    aragog-models load llama3-70b [--wait]
    aragog-models add new-model.json [--wait]     # one pool-file model entry, JSON or YAML

`--scheduler` (or ARAGOG_SCHEDULER_ADDR) names the active scheduler, default 127.0.0.1:50052;
the scheduler's port is the services' own, so where it asks for mutual TLS pass the service
certificate the others use (the ARAGOG_TLS_* settings are read). `--by` records who asked
(default: the user name). `--wait` returns once the model is serving or unloaded (or failed:
exit 1). Exit 2: the scheduler refused (the message says why).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time

import grpc
import yaml
from aragog.common.rpc import channel_credentials
from aragog.common.settings import SchedulerSettings
from aragog.v1 import scheduler_pb2, scheduler_pb2_grpc

FINAL = {"serving", "unloaded", "failed"}


def _state(stub, model: str) -> str:  # type: ignore[no-untyped-def]
    return stub.GetSchedulerState(scheduler_pb2.GetSchedulerStateRequest(),
                                  timeout=10).model_state.get(model, "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="aragog-models", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scheduler", default=os.environ.get("ARAGOG_SCHEDULER_ADDR",
                                                          "127.0.0.1:50052").split(",")[0])
    change = argparse.ArgumentParser(add_help=False)  # the options of every change
    change.add_argument("--by", default=getpass.getuser(), help="who asks (recorded)")
    change.add_argument("--wait", action="store_true", help="until the change is complete")
    change.add_argument("--timeout", type=float, default=600.0, help="of --wait, seconds")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("state", help="each model's state and the newest changes")
    for cmd in ("unload", "load"):
        sub.add_parser(cmd, parents=[change], help=f"{cmd} a model of the pool"
                       ).add_argument("model")
    sub.add_parser("add", parents=[change], help="add a model (a pool-file entry)"
                   ).add_argument("file")
    args = ap.parse_args(argv)
    creds = channel_credentials(SchedulerSettings.from_env())
    channel = (grpc.secure_channel(args.scheduler, creds) if creds
               else grpc.insecure_channel(args.scheduler))
    stub = scheduler_pb2_grpc.SchedulerServiceStub(channel)
    try:
        if args.cmd == "state":
            st = stub.GetSchedulerState(scheduler_pb2.GetSchedulerStateRequest(), timeout=10)
            for model, state in st.model_state.items():
                print(f"{model}: {state} "
                      f"({st.leased.get(model, 0)}/{st.capacity.get(model, 0)} leased)")
            for c in st.pool_changes:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(c.at))
                print(f"{when} {c.action} {c.model} -> {c.state}"
                      + (f" by {c.by}" if c.by else "") + (f": {c.detail}" if c.detail else ""))
            return 0
        if args.cmd == "add":
            with open(args.file, encoding="utf-8") as f:
                profile = yaml.safe_load(f)
            r = stub.AddModel(scheduler_pb2.AddModelRequest(
                profile_json=json.dumps(profile), by=args.by), timeout=10)
        elif args.cmd == "unload":
            r = stub.UnloadModel(scheduler_pb2.UnloadModelRequest(model=args.model, by=args.by),
                                 timeout=10)
        else:
            r = stub.LoadModel(scheduler_pb2.LoadModelRequest(model=args.model, by=args.by),
                               timeout=10)
        state, deadline = r.state, time.monotonic() + args.timeout
        while args.wait and state not in FINAL and time.monotonic() < deadline:
            time.sleep(0.5)
            state = _state(stub, r.model)
        print(f"{r.model}: {state}")
        return 1 if state == "failed" else 0
    except grpc.RpcError as e:
        print(f"aragog-models: {e.code().name}: {e.details()}", file=sys.stderr)
        return 2
    except (OSError, yaml.YAMLError) as e:
        print(f"aragog-models: {e}", file=sys.stderr)
        return 2
    finally:
        channel.close()


if __name__ == "__main__":
    sys.exit(main())
