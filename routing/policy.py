"""Routing policies as data: validated, versioned, one per pool (a default where a pool has none)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints


class Policy(BaseModel):
    """Capacity-aware load balancing: the least loaded eligible rep relative to capacity wins."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: Annotated[str, StringConstraints(min_length=1, max_length=64)] = "default"
    version: Annotated[int, Field(ge=1)] = 1
    strategy: Literal["least_loaded"] = "least_loaded"
    runners_up: Annotated[int, Field(ge=0, le=10)] = 3


DEFAULT_POLICY = Policy()
