"""One router per resource; ``api_router`` is everything under ``/api/v1``."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes import analyses, auth, config, delivery, devices, me, notifications, realtime

api_router = APIRouter()
api_router.include_router(auth.router)
api_router.include_router(realtime.router)
api_router.include_router(analyses.router)
api_router.include_router(delivery.router)
api_router.include_router(notifications.router)
api_router.include_router(devices.router)
api_router.include_router(config.router)
api_router.include_router(me.router)
