"""Database sessions: the request dependency owns the transaction; services only `flush()`.

Two session types: `ReadSession` (a protocol with only the query methods, backed by a
`READ ONLY` transaction) for endpoints that read, and SQLAlchemy's `AsyncSession` for endpoints
that write, so mypy rejects `read_session.add(...)` and PostgreSQL rejects a write regardless.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import Depends, Request
from sqlalchemy import Result, text
from sqlalchemy.engine import ScalarResult
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.sql import Executable

from api.errors import RefstreamError
from schemas.settings import Settings

_T = TypeVar("_T")


class ReadSession(Protocol):
    """What read-only code may do with a session. `AsyncSession` satisfies it."""

    async def execute(
        self, statement: Executable, params: Any = None
    ) -> Result[*tuple[Any, ...]]: ...

    async def scalar(self, statement: Executable, params: Any = None) -> Any: ...

    async def scalars(self, statement: Executable, params: Any = None) -> ScalarResult[Any]: ...

    async def get(self, entity: type[_T], ident: Any) -> _T | None: ...


def create_engine(settings: Settings) -> AsyncEngine:
    return create_async_engine(settings.postgres_async_url, pool_pre_ping=True, pool_size=10)


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


def _sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    return maker


async def get_write_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One transaction per request: commit when the endpoint returns, roll back when it raises
    (unless the error asks to keep its writes, see `RefstreamError.commit_transaction`)."""
    async with _sessionmaker(request)() as session:
        try:
            yield session
        except BaseException as exc:
            if isinstance(exc, RefstreamError) and exc.commit_transaction:
                await session.commit()
            else:
                await session.rollback()
            raise
        await session.commit()


async def get_read_session(request: Request) -> AsyncIterator[ReadSession]:
    async with _sessionmaker(request)() as session:
        await session.execute(text("SET TRANSACTION READ ONLY"))
        try:
            yield session
        finally:
            await session.rollback()


# scope="function": the commit finishes before the response is sent, so a failed commit is a 500
# and never a success the client saw for data that does not exist.
WriteSession = Annotated[AsyncSession, Depends(get_write_session, scope="function")]
ReadOnlySession = Annotated[ReadSession, Depends(get_read_session, scope="function")]
