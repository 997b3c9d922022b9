"""The worker's per-inquiry statements, with their SQL built once.

peewee builds a statement's SQL anew on every call, and for the wide Lead
model that costs more than the database's own work. The handful of
statements the pipeline runs for every inquiry (read the inbound row, look
up an open lead or a contact, insert the lead and its activity, write the
score and the outcome) go through here instead: their SQL text is made once
per model, column list and database kind, from the models' own metadata (so
it follows the schema), and every value is a parameter converted by its
field's ``db_value`` and read back by ``python_value``, exactly as peewee
does it. What these functions return are ordinary model instances.

Anything that is not on that hot path uses peewee's query builder as usual.
"""

import threading

from leadflow.store.database import db, is_postgres

_statements = {}
_lock = threading.Lock()


def _kind():
    return "postgresql" if is_postgres() else "sqlite"


def _param():
    return "%s" if is_postgres() else "?"


def _statement(key, build):
    """The SQL for ``key`` (which includes the database kind), built on first use."""
    try:
        return _statements[key]
    except KeyError:
        pass
    sql = build()
    with _lock:
        _statements[key] = sql
    return sql


def _quote(name):
    return '"' + name.replace('"', '""') + '"'


def _table(model):
    return _quote(model._meta.table_name)


def insert(model, values, unless_taken=None):
    """Insert one row (``values``: field names to Python values, defaults not applied);
    its id.

    ``unless_taken`` names a unique field: when a row with the same value exists
    already, nothing is inserted and None is returned (``ON CONFLICT DO NOTHING``
    on that column alone, so every other constraint still raises).
    """
    fields = [model._meta.fields[name] for name in values]
    names = tuple(values)
    pk = model._meta.primary_key
    kind = _kind()

    def build():
        param = _param()
        sql = (f"INSERT INTO {_table(model)} ({', '.join(_quote(f.column_name) for f in fields)}) "
               f"VALUES ({', '.join([param] * len(fields))})")
        if unless_taken is not None:
            sql += (f" ON CONFLICT ({_quote(model._meta.fields[unless_taken].column_name)})"
                    " DO NOTHING")
        return sql + f" RETURNING {_quote(pk.column_name)}" if kind == "postgresql" else sql

    sql = _statement(("insert", model, names, unless_taken, kind), build)
    cursor = db.execute_sql(sql, [f.db_value(values[f.name]) for f in fields])
    if kind == "postgresql":
        row = cursor.fetchone()
        return row[0] if row is not None else None
    if unless_taken is not None and cursor.rowcount != 1:
        return None
    return cursor.lastrowid


def create(model, **values):
    """``model.create(**values)``: defaults as peewee applies them; the saved instance."""
    obj = model(**values)
    data = obj.__data__
    pk = model._meta.primary_key
    new_id = insert(model, {name: value for name, value in data.items() if name != pk.name})
    setattr(obj, pk.name, new_id)
    obj._dirty.clear()
    return obj


def update(model, pk_value, values, unowned=None):
    """``UPDATE model SET ... WHERE id = pk_value``; ``values`` maps field names to Python
    values. With ``unowned`` (a field name) only a row where that field is NULL changes.
    Returns the number of rows changed."""
    fields = [model._meta.fields[name] for name in values]
    names = tuple(values)
    kind = _kind()
    pk = model._meta.primary_key

    def build():
        param = _param()
        sets = ", ".join(f"{_quote(f.column_name)} = {param}" for f in fields)
        sql = f"UPDATE {_table(model)} SET {sets} WHERE {_quote(pk.column_name)} = {param}"
        if unowned is not None:
            sql += f" AND {_quote(model._meta.fields[unowned].column_name)} IS NULL"
        return sql

    sql = _statement(("update", model, names, unowned, kind), build)
    params = [f.db_value(values[f.name]) for f in fields]
    params.append(pk.db_value(pk_value))
    return db.execute_sql(sql, params).rowcount


def save(obj, only):
    """``obj.save(only=only)`` for a saved instance: writes the named fields (or fields)."""
    names = [f if isinstance(f, str) else f.name for f in only]
    values = {name: obj.__data__.get(name) for name in names}
    changed = update(type(obj), obj._pk, values)
    for name in names:
        obj._dirty.discard(name)
    return changed


def save_dirty(obj):
    """Write what changed on a saved instance (nothing if nothing did)."""
    dirty = sorted(obj._dirty)
    return save(obj, dirty) if dirty else 0


def get(model, column, value, fields=None, for_update=False):
    """The first row (by id) whose ``column`` equals ``value``, as an instance; None if none.

    ``fields``: the names to read (default: every field); ``for_update`` locks
    the row on PostgreSQL for the rest of the transaction.
    """
    meta = model._meta
    chosen = tuple(fields) if fields is not None else tuple(f.name for f in meta.sorted_fields)
    kind = _kind()
    locking = for_update and kind == "postgresql"

    def build():
        cols = ", ".join(_quote(meta.fields[name].column_name) for name in chosen)
        sql = (f"SELECT {cols} FROM {_table(model)} WHERE {_quote(meta.fields[column].column_name)}"
               f" = {_param()} ORDER BY {_quote(meta.primary_key.column_name)} LIMIT 1")
        return sql + " FOR UPDATE" if locking else sql

    sql = _statement(("get", model, column, chosen, locking, kind), build)
    row = db.execute_sql(sql, [meta.fields[column].db_value(value)]).fetchone()
    if row is None:
        return None
    data = {}
    for name, raw in zip(chosen, row):
        data[name] = meta.fields[name].python_value(raw) if raw is not None else None
    obj = model(__no_default__=True)
    obj.__data__ = data
    obj._dirty.clear()
    return obj
