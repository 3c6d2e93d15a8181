"""Aragog's load generator: arrival processes, a gRPC client, a Locust user, an open-loop runner.

Modules: `arrivals` (seeded arrival times), `workload` (request mixes from files),
`client` (one request, synchronous gRPC -> `RequestRecord`), `locustfile` (Locust user,
headless or web UI), `runner` (open-loop driver in a gevent subprocess).

Kept free of imports: `python -m aragog.loadgen.runner` and Locust must initialise gevent
for gRPC before anything imports grpc, and importing this package comes first.
"""
