"""Run amqtt on 127.0.0.1 with our JWT auth and per-user topic rules until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal

from amqtt.broker import Broker


def config(port: int, ws_port: int, secret: str, audience: str) -> dict[str, object]:
    return {
        "listeners": {
            "default": {"type": "tcp", "bind": f"127.0.0.1:{port}"},
            "ws": {"type": "ws", "bind": f"127.0.0.1:{ws_port}"},
        },
        "plugins": {
            "bench.amqtt_auth.JwtAuthPlugin": {"secret": secret, "audience": audience},
            "bench.amqtt_auth.UserTopicPlugin": {},
        },
    }


async def _main(args: argparse.Namespace) -> None:
    secret = os.environ.pop("PLANTNOTIFY_BENCH_SECRET")
    broker = Broker(config(args.port, args.ws_port, secret, args.audience))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await broker.start()
    await stop.wait()
    await broker.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ws-port", type=int, required=True)
    parser.add_argument("--audience", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
