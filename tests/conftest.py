"""Shared fixtures: the factories of tests/factories.py, as fixtures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests import factories


@pytest.fixture
def make_lead() -> Callable[..., Any]:
    return factories.make_lead


@pytest.fixture
def make_rep() -> Callable[..., Any]:
    return factories.make_rep


@pytest.fixture
def make_deal() -> Callable[..., Any]:
    return factories.make_deal
