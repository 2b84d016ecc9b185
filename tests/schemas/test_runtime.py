"""Server processes freeze their start-up heap (`schemas.runtime`), in both apps' lifespans."""

from __future__ import annotations

import gc

import pytest
from fastapi import FastAPI

import api.app
import ingest.app
from schemas.runtime import freeze_startup_heap
from schemas.settings import Settings


def test_the_start_up_heap_leaves_the_collectors_reach() -> None:
    gc.unfreeze()
    try:
        made_at_start_up = [[n] for n in range(1000)]  # container objects, tracked by the GC
        frozen = freeze_startup_heap()
        assert frozen == gc.get_freeze_count()
        assert frozen >= len(made_at_start_up)
        assert gc.get_count()[0] < 10  # the young generation was collected, then frozen
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("module", [api.app, ingest.app])
async def test_each_app_freezes_its_heap_once_started(
    module: object, stack_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(module, "freeze_startup_heap", lambda: calls.append(1) or 0)
    app: FastAPI = module.create_app(stack_settings)  # type: ignore[attr-defined]
    async with app.router.lifespan_context(app):
        assert calls == [1]
    assert calls == [1]
