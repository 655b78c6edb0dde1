"""Single-row statements without the ORM's per-call compilation, for the hot path.

Every task passes through a handful of single-row statements (the scheduler's
claim, the worker's claim, the attempt row, the completion). Through the ORM each
one costs 0.2-0.5 ms of CPU to build (filters, compiler, converters) and ~0.02 ms
to run; a worker finishing hundreds of short tasks a second spent more CPU
compiling SQL than streaming from Ollama (bench/dispatch.py measures it).

Here the SQL text of each statement shape is built once per process from the
model's metadata (table, columns, quoting), parameters go through the field's own
``get_db_prep_save`` and values read back through the same converters the ORM
applies, so a row written here is exactly what ``QuerySet.update`` / ``create``
would have written, on SQLite and PostgreSQL alike. Anything that is not a
single-row equality-filtered statement belongs in the ORM.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import connections, models
from django.db.models.expressions import Col
from django.utils import timezone


@dataclass(frozen=True)
class Add:
    """``column = column + amount`` in an update."""

    amount: int


def update(model: type[models.Model], values: dict[str, Any], where: dict[str, Any],
           returning: tuple[str, ...] = (), using: str = "default") -> int | list[dict[str, Any]]:
    """UPDATE ``model`` SET ``values`` WHERE every ``where`` field equals its value.

    A value may be ``Add(n)`` (the column plus n) or None (NULL). Returns the number
    of rows changed or, with ``returning``, those fields of each changed row, as the
    ORM would load them. Like ``QuerySet.update`` it leaves ``auto_now`` fields alone
    and sends no signals.
    """
    connection = connections[using]
    shape = tuple((name, _kind(value)) for name, value in values.items())
    statement = _update_statement(model, shape, tuple(where), returning, connection)
    params = [value.amount if isinstance(value, Add) else _prep(model, name, value, connection)
              for name, value in values.items() if value is not None]
    params += [_prep(model, name, value, connection) for name, value in where.items()]
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, params)
        if not returning:
            return cursor.rowcount
        if statement.select_sql:
            # No UPDATE ... RETURNING here (SQLite before 3.35): read the row back;
            # the filter includes the primary key, so it is the row just changed.
            if cursor.rowcount < 1:
                return []
            pk = model._meta.pk
            assert pk is not None
            cursor.execute(statement.select_sql, [_prep(model, pk.name, where[pk.name], connection)])
        rows = cursor.fetchall()
    return [statement.read(row, connection) for row in rows]


def insert(model: type[models.Model], values: dict[str, Any], using: str = "default") -> None:
    """INSERT one row. Fields not given take their defaults; an ``auto_now_add`` field
    must be given; an auto-incremented primary key is left to the database."""
    connection = connections[using]
    fields = _insert_fields(model)
    sql = _insert_sql(model, connection)
    params = [f.get_db_prep_save(_given(values, f), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def insert_instance(instance: models.Model, using: str = "default") -> None:
    """``instance.save()`` for a new row, as one INSERT: ``auto_now``/``auto_now_add``
    fields are set as save() sets them. No signals are sent (none are connected for
    the models this is used for)."""
    now = timezone.now()
    for field in instance._meta.concrete_fields:
        if getattr(field, "auto_now", False) or (getattr(field, "auto_now_add", False)
                                                 and getattr(instance, field.attname) is None):
            setattr(instance, field.attname, now)
    insert(type(instance), {f.attname: getattr(instance, f.attname) for f in _insert_fields(type(instance))}, using)
    instance._state.adding = False
    instance._state.db = using


def get(model: type[models.Model], pk: Any, fields: tuple[str, ...] = (), using: str = "default") -> Any:
    """The row with primary key ``pk`` as a model instance, or None: every concrete
    field, or only ``fields`` (and the key) with the rest loading on first access."""
    connection = connections[using]
    statement = _select_statement(model, fields, connection)
    pk_field = model._meta.pk
    assert pk_field is not None
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, [pk_field.get_db_prep_value(pk, connection)])
        row = cursor.fetchone()
    if row is None:
        return None
    return instance(model, statement.read(row, connection), using)


def instance(model: type[models.Model], values: dict[str, Any], using: str = "default") -> Any:
    """A model instance of a row read in part (values by attname), as the ORM builds
    one from a query with ``only()``: the fields not given load on first access."""
    names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
    return model.from_db(using, names, [values[name] for name in names])


# -- statement shapes, built once per process ---------------------------------------


@dataclass(frozen=True)
class _Statement:
    sql: str
    columns: tuple[Col, ...] = ()  # what each result column is, for the ORM's converters
    select_sql: str = ""

    def read(self, row: tuple[Any, ...], connection: Any) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for col, value in zip(self.columns, row, strict=True):
            for converter in _converters(col, connection):
                value = converter(value, col, connection)
            out[col.target.attname] = value
        return out


_converter_cache: dict[tuple[int, str], list[Any]] = {}


def _converters(col: Col, connection: Any) -> list[Any]:
    key = (id(col.target), connection.alias)
    found = _converter_cache.get(key)
    if found is None:
        found = _converter_cache[key] = [*connection.ops.get_db_converters(col), *col.get_db_converters(connection)]
    return found


def _kind(value: Any) -> str:
    return "add" if isinstance(value, Add) else "null" if value is None else "value"


_statements: dict[tuple[Any, ...], Any] = {}


def _update_statement(model: type[models.Model], shape: tuple[tuple[str, str], ...], where_names: tuple[str, ...],
                      returning: tuple[str, ...], connection: Any) -> _Statement:
    key = ("update", model, shape, where_names, returning, connection.alias)
    statement = _statements.get(key)
    if statement is None:
        meta, q = model._meta, connection.ops.quote_name

        def column(name: str) -> str:
            return q(meta.get_field(name).column)

        assignments = {"value": "{c} = %s", "add": "{c} = {c} + %s", "null": "{c} = NULL"}
        sql = (f"UPDATE {q(meta.db_table)} SET "
               + ", ".join(assignments[kind].format(c=column(name)) for name, kind in shape)
               + " WHERE " + " AND ".join(f"{column(name)} = %s" for name in where_names))
        select_sql = ""
        if returning:
            wanted = ", ".join(column(name) for name in returning)
            if connection.features.can_return_columns_from_insert:  # RETURNING is there for UPDATE too
                sql += f" RETURNING {wanted}"
            else:
                assert meta.pk is not None and meta.pk.name in where_names, "returning needs the primary key in where"
                select_sql = f"SELECT {wanted} FROM {q(meta.db_table)} WHERE {column(meta.pk.name)} = %s"
        columns = tuple(meta.get_field(name).get_col(meta.db_table) for name in returning)
        statement = _statements[key] = _Statement(sql, columns, select_sql)
    return statement


def _select_statement(model: type[models.Model], names: tuple[str, ...], connection: Any) -> _Statement:
    key = ("select", model, names, connection.alias)
    statement = _statements.get(key)
    if statement is None:
        meta, q = model._meta, connection.ops.quote_name
        assert meta.pk is not None
        fields = [f for f in meta.concrete_fields if not names or f.primary_key or f.name in names]
        sql = (f"SELECT {', '.join(q(f.column) for f in fields)} FROM {q(meta.db_table)} "
               f"WHERE {q(meta.pk.column)} = %s")
        statement = _statements[key] = _Statement(sql, tuple(f.get_col(meta.db_table) for f in fields))
    return statement


def _insert_fields(model: type[models.Model]) -> list[Any]:
    return [f for f in model._meta.concrete_fields if not f.primary_key or not isinstance(f, models.AutoField)]


def _insert_sql(model: type[models.Model], connection: Any) -> str:
    key = ("insert", model, connection.alias)
    sql = _statements.get(key)
    if sql is None:
        meta, q = model._meta, connection.ops.quote_name
        fields = _insert_fields(model)
        sql = _statements[key] = (f"INSERT INTO {q(meta.db_table)} ({', '.join(q(f.column) for f in fields)}) "
                                  f"VALUES ({', '.join(['%s'] * len(fields))})")
    return sql


def _given(values: dict[str, Any], field: Any) -> Any:
    """A field's value by name or attname (a foreign key by its target's value), else its default."""
    if field.attname in values:
        return values[field.attname]
    if field.name in values:
        value = values[field.name]
        return value.pk if isinstance(value, models.Model) else value
    return field.get_default()


def _prep(model: type[models.Model], name: str, value: Any, connection: Any) -> Any:
    return model._meta.get_field(name).get_db_prep_save(value, connection)
