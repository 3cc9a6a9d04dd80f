"""``/healthz`` (liveness), ``/readyz`` (dependencies reachable) and ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse

from api.deps import StateDep
from api.metrics import CONTENT_TYPE
from api.readiness import OK, check_dependencies
from api.schemas import Liveness, Readiness
from plantnotify.logs import get_logger

router = APIRouter(tags=["health"])
log = get_logger("plantnotify.api.health")


@router.get("/healthz", response_model=Liveness, summary="Liveness: the process answers")
def healthz() -> Liveness:
    return Liveness()


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: 200 only when PostgreSQL, RabbitMQ and MQTT are reachable",
    responses={503: {"model": Readiness, "description": "A dependency is unreachable"}},
)
async def readyz(state: StateDep) -> JSONResponse:
    checks = await check_dependencies(state.settings, state.engine)
    ready = all(v == OK for v in checks.values())
    if not ready:
        log.warning("not ready", extra={k: v for k, v in checks.items() if v != OK})
    body = Readiness(status="ready" if ready else "unavailable", checks=checks)
    return JSONResponse(
        body.model_dump(by_alias=True),
        status_code=status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE,
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def metrics(state: StateDep) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
