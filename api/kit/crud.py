"""Generated CRUD for standard entities: one `CrudSpec` -> list/get/create/update/delete routes.

What every generated router guarantees, so no entity re-implements it:
- rows are read through a `ScopedRepository` (tenant, then the `Placement`'s unit scoping);
- the route requires the read/write permission somewhere, and the service check requires the
  write permission where the row lives (`can`, or company-wide for rows without a unit);
- list: keyset pagination over (sort column, id), equality filters, `sort=field|-field`;
- get/create/update answer with an `ETag`; update and delete honour `If-Match` (412 on mismatch);
- every mutation writes an audit entry (`<noun>.create|update|delete`) in the same transaction;
- unique/foreign-key violations answer 409; references to other rows must be in the tenant;
- `after_commit` runs once the transaction committed (e.g. announcing registry changes).

Money never goes through here: the ledger, rules and payouts have hand-written services.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, Protocol

from fastapi import APIRouter, BackgroundTasks, Body, Depends, Path, Query, Request
from fastapi import Response as FastAPIResponse
from pydantic import BaseModel, Field, create_model
from sqlalchemy import ColumnElement, Select, select, true, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.agents.repository import AgentRepository, agent_scope_clause
from api.audit import record
from api.authz.dependencies import Authorized
from api.authz.policies import Principal, Scope, can_at
from api.context import Meta, RequestMeta
from api.db import ReadOnlySession, ReadSession, WriteSession
from api.errors import Conflict, Forbidden, NotFound
from api.kit.etag import IfMatch, check_if_match, etag_of
from api.kit.pagination import Page, decode_keyset, encode_keyset
from api.kit.repository import ScopedRepository
from api.models import Agent, Unit
from api.snapshots import snapshot
from schemas.ids import random_id


class Placement(Protocol):
    """Where an entity's rows live in the unit tree."""

    def join(self, statement: Select[Any]) -> Select[Any]: ...

    def readable(self, principal: Principal, scope: Scope) -> ColumnElement[bool]: ...

    def path_column(self) -> Any:
        """The column holding a row's unit path, or None for company-wide rows."""

    async def path_of_new(
        self, session: ReadSession, principal: Principal, permission: str, values: Mapping[str, Any]
    ) -> str | None:
        """The unit path a new row with `values` will live in (None: company-wide)."""


class CompanyWide:
    """Company configuration (programs, shops): readable by anyone holding the read permission
    somewhere in the company, writable only with the write permission on the root unit."""

    def join(self, statement: Select[Any]) -> Select[Any]:
        return statement

    def readable(self, principal: Principal, scope: Scope) -> ColumnElement[bool]:  # noqa: ARG002
        return true()

    def path_column(self) -> Any:
        return None

    async def path_of_new(
        self,
        session: ReadSession,  # noqa: ARG002 (the Placement protocol's signature)
        principal: Principal,  # noqa: ARG002
        permission: str,  # noqa: ARG002
        values: Mapping[str, Any],  # noqa: ARG002
    ) -> str | None:
        return None


@dataclass(frozen=True)
class ByAgent:
    """Rows that belong to an agent (links, coupon codes, notes): they live in the agent's unit,
    and agent grants reach the rows of their own agents."""

    agent_column: Any

    def join(self, statement: Select[Any]) -> Select[Any]:
        return statement.join(Agent, Agent.id == self.agent_column).outerjoin(
            Unit, Unit.id == Agent.unit_id
        )

    def readable(self, principal: Principal, scope: Scope) -> ColumnElement[bool]:
        return agent_scope_clause(principal, scope)

    def path_column(self) -> Any:
        return Unit.path

    async def path_of_new(
        self, session: ReadSession, principal: Principal, permission: str, values: Mapping[str, Any]
    ) -> str | None:
        _, path = await AgentRepository(session, principal, permission).get_with_path(
            values["agent_id"]
        )
        return path


@dataclass(frozen=True, slots=True)
class Change:
    """What a `prepare` hook sees: the caller, the request, the values to write and (on update)
    the row before the change."""

    principal: Principal
    meta: RequestMeta
    values: dict[str, Any]
    row: Any | None


@dataclass(frozen=True, kw_only=True)
class CrudSpec:
    noun: str  # audit actions are "<noun>.create|update|delete"; also the entity type
    prefix: str  # "/programs"
    tag: str
    model: type[Any]
    id_field: str = "id"
    id_param: str  # path parameter name, e.g. "program_id"
    id_prefix: str | None  # random id prefix; None: the id comes from the create body
    create_schema: type[BaseModel]
    update_schema: type[BaseModel]
    read_schema: type[BaseModel]  # built from the row (`from_attributes`); secrets left out
    read_permission: str
    write_permission: str
    placement: Placement
    references: Mapping[str, type[Any]] = field(default_factory=dict)
    filters: Mapping[str, type[Any]] = field(default_factory=dict)
    sorts: tuple[str, ...] = ("created_at",)
    prepare: Callable[[Change], dict[str, Any]] | None = None
    # The stored form of an id given in a path (e.g. coupon codes are matched upper-case).
    normalise_id: Callable[[str], str] | None = None
    after_commit: Callable[[Request], Awaitable[None]] | None = None
    # False: the entity has a hand-written create route (e.g. shops, which need a proof).
    generate_create: bool = True

    @property
    def id_column(self) -> Any:
        return getattr(self.model, self.id_field)


class CrudRepository(ScopedRepository[Any]):
    """Rows of one `CrudSpec`, scoped by its placement."""

    spec: ClassVar[CrudSpec]

    def base_statement(self) -> Select[Any]:
        return self.spec.placement.join(select(self.spec.model))

    def scope_clause(self, scope: Scope) -> ColumnElement[bool]:
        return self.spec.placement.readable(self.principal, scope)

    async def get_with_path(self, object_id: str) -> tuple[Any, str | None]:
        """The row and the unit path it lives in (None: company-wide), or `NotFound`."""
        spec = self.spec
        if spec.normalise_id is not None:
            object_id = spec.normalise_id(object_id)
        statement = self.readable_statement().where(spec.id_column == object_id)
        path_column = spec.placement.path_column()
        if path_column is None:
            row = await self.session.scalar(statement)
            path = None
        else:
            found = (await self.session.execute(statement.add_columns(path_column))).first()
            row, path = found if found is not None else (None, None)
        if row is None:
            raise NotFound(f"No {spec.noun} {object_id!r}.")
        return row, path


def scoped_repository(spec: CrudSpec) -> type[CrudRepository]:
    """The repository class of `spec`'s rows (other domains use it to reach those rows)."""
    attributes = {
        "spec": spec,
        "model": spec.model,
        "id_column": spec.id_column,
        "tenant_column": spec.model.tenant_id,
    }
    return type(f"{spec.model.__name__}Repository", (CrudRepository,), attributes)


class _ListParams(BaseModel):
    cursor: str | None = Field(default=None, description="`next_cursor` of the previous page.")
    limit: int = Field(default=50, ge=1, le=200, description="Page size.")


def _list_params_model(spec: CrudSpec) -> type[_ListParams]:
    orders = tuple(o for s in spec.sorts for o in (s, f"-{s}"))
    fields: dict[str, Any] = {
        "sort": (Literal[orders], Field(default=spec.sorts[0], description="`field` or `-field`."))
    }
    fields |= {name: (kind | None, None) for name, kind in spec.filters.items()}
    name = f"{spec.noun.title().replace('_', '')}ListParams"
    model: type[_ListParams] = create_model(name, __base__=_ListParams, **fields)
    return model


def _bind(function: Callable[..., Any], **annotations: Any) -> Callable[..., Any]:
    """Give a generated endpoint its concrete parameter types (FastAPI reads them at runtime)."""
    function.__annotations__ = {**function.__annotations__, **annotations}
    return function


def crud_router(spec: CrudSpec) -> APIRouter:
    """The five routes of `spec`, under `spec.prefix`."""
    router = APIRouter(prefix=spec.prefix, tags=[spec.tag])
    repository = scoped_repository(spec)
    params_model = _list_params_model(spec)
    reader = Annotated[Principal, Depends(Authorized(spec.read_permission))]
    writer = Annotated[Principal, Depends(Authorized(spec.write_permission))]
    object_id_param = Annotated[str, Path(alias=spec.id_param)]
    item = f"/{{{spec.id_param}}}"

    def present(row: Any, response: FastAPIResponse) -> BaseModel:
        representation = spec.read_schema.model_validate(row, from_attributes=True)
        response.headers["ETag"] = etag_of(representation)
        return representation

    async def list_items(principal: Any, session: ReadOnlySession, params: Any) -> Any:
        statement = repository(session, principal, spec.read_permission).readable_statement()
        for name in spec.filters:
            value = getattr(params, name)
            if value is not None:
                statement = statement.where(getattr(spec.model, name) == value)
        descending = params.sort.startswith("-")
        column = getattr(spec.model, params.sort.lstrip("-"))
        key = tuple_(column, spec.id_column)
        if params.cursor:
            after = tuple_(*decode_keyset(params.cursor, column.type.python_type))
            statement = statement.where(key < after if descending else key > after)
        order = (column.desc(), spec.id_column.desc()) if descending else (column, spec.id_column)
        rows = (await session.scalars(statement.order_by(*order).limit(params.limit))).all()
        items = [spec.read_schema.model_validate(r, from_attributes=True) for r in rows]
        last = rows[-1] if len(rows) == params.limit else None
        next_cursor = (
            encode_keyset(getattr(last, column.key), getattr(last, spec.id_field)) if last else None
        )
        return {"items": items, "next_cursor": next_cursor}

    async def get_item(
        object_id: Any, principal: Any, session: ReadOnlySession, response: FastAPIResponse
    ) -> Any:
        row, _ = await repository(session, principal, spec.read_permission).get_with_path(object_id)
        return present(row, response)

    async def create_item(
        body: Any,
        principal: Any,
        session: WriteSession,
        meta: Meta,
        request: Request,
        response: FastAPIResponse,
        background: BackgroundTasks,
    ) -> Any:
        values = body.model_dump()
        await _check_references(session, spec, principal, values)
        path = await spec.placement.path_of_new(session, principal, spec.read_permission, values)
        if not can_at(principal, spec.write_permission, path):
            raise Forbidden(f"You cannot create a {spec.noun} here.")
        if spec.prepare is not None:
            values = spec.prepare(Change(principal=principal, meta=meta, values=values, row=None))
        if spec.id_prefix is not None:
            values[spec.id_field] = random_id(spec.id_prefix)
        row = spec.model(tenant_id=principal.tenant_id, created_at=meta.now, **values)
        session.add(row)
        await _flush(session, spec)
        await _audit(session, spec, principal, meta, "create", row, before=None)
        _after_commit(spec, request, background)
        return present(row, response)

    async def writable(
        session: WriteSession, principal: Any, object_id: Any, if_match: str | None, verb: str
    ) -> Any:
        """The row to change: readable, writable at its unit, and not changed since `If-Match`."""
        row, path = await repository(session, principal, spec.read_permission).get_with_path(
            object_id
        )
        if not can_at(principal, spec.write_permission, path):
            raise Forbidden(f"You cannot {verb} this {spec.noun}.")
        check_if_match(
            if_match, etag_of(spec.read_schema.model_validate(row, from_attributes=True))
        )
        return row

    async def update_item(
        object_id: Any,
        body: Any,
        principal: Any,
        session: WriteSession,
        meta: Meta,
        request: Request,
        response: FastAPIResponse,
        background: BackgroundTasks,
        if_match: IfMatch = None,
    ) -> Any:
        row = await writable(session, principal, object_id, if_match, "change")
        columns = spec.model.__table__.c
        # An explicit null clears nullable columns only; elsewhere it means "leave as is".
        # Fields that are no column (a write-only secret) reach `prepare` as sent.
        values = {
            k: v
            for k, v in body.model_dump(exclude_unset=True).items()
            if v is not None or k not in columns or columns[k].nullable
        }
        await _check_references(session, spec, principal, values)
        if spec.prepare is not None:
            values = spec.prepare(Change(principal=principal, meta=meta, values=values, row=row))
        before = snapshot(row)
        for name, value in values.items():
            setattr(row, name, value)
        await _flush(session, spec)
        await _audit(session, spec, principal, meta, "update", row, before=before)
        _after_commit(spec, request, background)
        return present(row, response)

    async def delete_item(
        object_id: Any,
        principal: Any,
        session: WriteSession,
        meta: Meta,
        request: Request,
        background: BackgroundTasks,
        if_match: IfMatch = None,
    ) -> None:
        row = await writable(session, principal, object_id, if_match, "delete")
        before = snapshot(row)
        await session.delete(row)
        await _flush(session, spec)
        await _audit(session, spec, principal, meta, "delete", row, before=before, gone=True)
        _after_commit(spec, request, background)

    noun = spec.noun.replace("_", " ")
    op_prefix = spec.tag.replace(" ", "_")  # operation ids read as SDK methods: notes.list
    router.get(
        "",
        operation_id=f"{op_prefix}.list",
        summary=f"List {noun}s",
        response_model=Page[spec.read_schema],  # type: ignore[name-defined]
    )(_bind(list_items, principal=reader, params=Annotated[params_model, Query()]))
    router.get(
        item,
        operation_id=f"{op_prefix}.get",
        summary=f"Get a {noun}",
        response_model=spec.read_schema,
    )(_bind(get_item, object_id=object_id_param, principal=reader))
    if spec.generate_create:
        router.post(
            "",
            operation_id=f"{op_prefix}.create",
            status_code=201,
            summary=f"Create a {noun}",
            response_model=spec.read_schema,
        )(_bind(create_item, body=Annotated[spec.create_schema, Body()], principal=writer))
    router.patch(
        item,
        operation_id=f"{op_prefix}.update",
        summary=f"Change a {noun}",
        response_model=spec.read_schema,
    )(
        _bind(
            update_item,
            object_id=object_id_param,
            body=Annotated[spec.update_schema, Body()],
            principal=writer,
        )
    )
    router.delete(
        item, operation_id=f"{op_prefix}.delete", status_code=204, summary=f"Delete a {noun}"
    )(_bind(delete_item, object_id=object_id_param, principal=writer))
    return router


async def _check_references(
    session: AsyncSession, spec: CrudSpec, principal: Principal, values: Mapping[str, Any]
) -> None:
    """Every referenced row must exist in the caller's tenant (its existence elsewhere is not
    disclosed)."""
    for name, model in spec.references.items():
        if values.get(name) is None:
            continue
        found = await session.scalar(
            select(model.id).where(model.id == values[name], model.tenant_id == principal.tenant_id)
        )
        if found is None:
            raise NotFound(f"No {model.__tablename__[:-1]} {values[name]!r}.")


async def _flush(session: AsyncSession, spec: CrudSpec) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict(
            f"The {spec.noun} conflicts with existing data (a duplicate key, or rows still "
            "referring to it)."
        ) from exc


async def _audit(
    session: AsyncSession,
    spec: CrudSpec,
    principal: Principal,
    meta: RequestMeta,
    verb: str,
    row: Any,
    *,
    before: dict[str, Any] | None,
    gone: bool = False,
) -> None:
    await record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action=f"{spec.noun}.{verb}",
        entity_type=spec.noun,
        entity_id=str(getattr(row, spec.id_field)),
        before=before,
        after=None if gone else snapshot(row),
        meta=meta,
    )


def _after_commit(spec: CrudSpec, request: Request, background: BackgroundTasks) -> None:
    # Background tasks run after the response, i.e. after the request's transaction committed;
    # a failed request sends no response body with tasks, so nothing is announced for it.
    if spec.after_commit is not None:
        background.add_task(spec.after_commit, request)
