"""Health follows the database: NOT_SERVING while it does not answer, SERVING once it does."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import Executor

import peewee
from grpc_health.v1 import health_pb2

from .storage.db import database, drop_connection

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def ping() -> bool:
    """Whether the database answers a trivial query (on this thread's connection)."""
    try:
        database.execute_sql("SELECT 1")
        return True
    except (peewee.OperationalError, peewee.InterfaceError):
        drop_connection()  # a dropped connection stays broken: reconnect on the next ping
        return False


async def watch(health, names: Sequence[str], executor: Executor, interval: float = 2.0) -> None:
    """Checks the database every `interval` seconds and sets every name's status (forever).

    One check at a time, on the executor: a check that takes longer than `interval` (a
    black-holed host) counts as down, and the next starts only once it has returned.
    """
    loop = asyncio.get_running_loop()
    serving = True
    check = None
    while True:
        await asyncio.sleep(interval)
        if check is None or check.done():
            check = loop.run_in_executor(executor, ping)
        try:
            up = await asyncio.wait_for(asyncio.shield(check), interval)
        except TimeoutError:
            up = False
        if up != serving:
            serving = up
            log.log(
                logging.INFO if up else logging.ERROR,
                "database %s: health %s",
                "is back" if up else "does not answer",
                "SERVING" if up else "NOT_SERVING",
            )
            for name in names:
                await health.set(name, SERVING if up else NOT_SERVING)
