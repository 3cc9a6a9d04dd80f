"""RabbitMQ names and the job message (contract §1)."""

from __future__ import annotations

from pydantic import Field

from plantnotify.contracts.events import _Wire

ANALYSIS_QUEUE = "plantnotify.analyses"
DEAD_LETTER_EXCHANGE = "plantnotify.dlx"
DEAD_LETTER_QUEUE = "plantnotify.analyses.dead"
JOB_CONTENT_TYPE = "application/json"
# Quorum-queue delivery limit: a job that crashes its worker this many times is dead-lettered.
DELIVERY_LIMIT = 5


class AnalysisJob(_Wire):
    analysis_id: str = Field(min_length=1, max_length=64)
    user_id: str = Field(min_length=1, max_length=64)
    request_id: str | None = Field(default=None, max_length=64)
    # W3C trace context of the analysis. It travels as the message's ``traceparent`` header,
    # not in the body (exclude=True): the publisher writes it, the consumer reads it back.
    traceparent: str | None = Field(default=None, max_length=55, exclude=True)
