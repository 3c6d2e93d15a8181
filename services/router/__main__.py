"""Entry point: `aragog-router` / `python -m aragog.router`."""

from __future__ import annotations

import asyncio
import os

from aragog import policies
from aragog.common.service import serve
from aragog.common.settings import RouterSettings
from aragog.common.store import Store, connect
from aragog.router.auth import AuthError, Tokens
from aragog.router.service import RouterService
from aragog.v1 import router_pb2, router_pb2_grpc


def loopback(listen: str) -> str:
    """The address a process reaches its own gRPC port at."""
    host, _, port = listen.rpartition(":")
    return f"{'127.0.0.1' if host in ('', '0.0.0.0', '[::]') else host}:{port}"


async def run(settings: RouterSettings) -> None:
    redis = connect(settings.redis_url, settings.redis_max_connections)
    store = Store(redis, settings.namespace)
    servicer = RouterService(settings, store)
    name = router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name
    front: list = []  # the HTTP front door's runner and client, once started

    async def pool_models() -> list[str]:
        pool = await store.get_pool()
        return pool.names if pool else []

    async def start() -> None:
        await redis.ping()
        await servicer.events.start()
        if os.path.isdir(servicer.routing.root):  # load the embedding model before traffic
            warm = asyncio.create_task(asyncio.to_thread(lambda: servicer.routing.embedder))
            servicer.background.add(warm)  # keep a reference until it is done
            warm.add_done_callback(servicer.background.discard)
        if settings.http_listen:
            from aragog.router import http

            # the router's own port may speak TLS: trust its CA, or its (self-signed) cert
            trust = settings.tls_ca_file or settings.tls_cert_file
            root = open(trust, "rb").read() if trust else None  # noqa: SIM115
            front.extend(await http.start(settings.http_listen, loopback(settings.listen),
                                          pool_models, root))

    try:
        await serve(
            "router", settings, settings.listen,
            [lambda s: router_pb2_grpc.add_RouterServiceServicer_to_server(servicer, s)],
            [name], start=start,
        )
    finally:
        if front:
            runner, door = front
            await runner.cleanup()
            await door.close()
        await servicer.events.stop()
        await redis.aclose()


def main() -> None:
    settings = RouterSettings.for_service("aragog-router")
    try:
        policies.make(settings.default_policy)
    except policies.PolicyError as e:
        raise SystemExit(f"aragog-router: ARAGOG_DEFAULT_POLICY: {e}") from None
    if settings.auth_tokens_file:
        try:
            Tokens.load(settings.auth_tokens_file)
        except AuthError as e:
            raise SystemExit(f"aragog-router: {e}") from None
    if settings.http_listen and settings.listen.endswith(":0"):
        raise SystemExit("aragog-router: ARAGOG_HTTP_LISTEN needs ARAGOG_LISTEN on a fixed port")
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
