"""Merging duplicate contacts and organisations.

``merge_contacts(keep, drop)`` / ``merge_organisations(keep, drop)`` fold the
second into the first, in one transaction:

- every link to the dropped row moves to the kept one. The links are found
  from the models themselves (every foreign key that points at the model:
  leads, opportunities, activities, contacts, rows merged earlier...), so a
  link added to the schema later moves too;
- each field the kept row lacks is taken from the dropped row, with that
  field's provenance (marked ``merged_from``); where both have a value the
  kept one wins and the other is recorded under ``provenance[field]
  ["alternatives"]``, so nothing a person once typed is lost;
- the dropped row stays, marked ``merged_into`` the kept one, with its unique
  values (email, domain) released; lists hide it;
- an AuditEvent ``contact.merge`` / ``organisation.merge`` records both rows
  as they were and how many links moved.
"""

import logging

from leadflow.errors import LeadflowError
from leadflow.store import crm
from leadflow.store.database import db, utcnow
from leadflow.store.models import Contact, Organisation

log = logging.getLogger("leadflow.sales")

CONTACT_FIELDS = ("name", "email", "phone", "title", "organisation", "owner")
ORGANISATION_FIELDS = ("name", "domain", "website", "size", "employees", "sector", "needs",
                       "country", "owner")
UNIQUE_FIELDS = {"email", "domain"}


class MergeError(LeadflowError):
    def __init__(self, kind, problem):
        super().__init__(kind, problem)
        self.kind = kind
        self.problem = problem

    def __str__(self):
        return f"cannot merge {self.kind}s: {self.problem}"


def _value(row, name):
    field = row._meta.fields[name]
    return getattr(row, field.column_name) if hasattr(field, "rel_model") else getattr(row, name)


def _snapshot(row, names):
    return {name: _value(row, name) for name in names}


def move_links(model, old_id, new_id):
    """Point every foreign key that references ``model`` row ``old_id`` at ``new_id``."""
    moved = {}
    for fk, referrer in model._meta.backrefs.items():
        count = referrer.update({fk: new_id}).where(fk == old_id).execute()
        if count:
            moved[f"{referrer._meta.table_name}.{fk.name}"] = count
    return moved


def _merge(model, kind, fields, keep_id, drop_id, actor):
    if keep_id == drop_id:
        raise MergeError(kind, "a row cannot be merged into itself")
    with db.atomic():
        keep = model.get_or_none(model.id == keep_id)
        drop = model.get_or_none(model.id == drop_id)
        for ident, row in ((keep_id, keep), (drop_id, drop)):
            if row is None:
                raise MergeError(kind, f"no {kind} {ident}")
            if row.merged_into_id:
                raise MergeError(kind, f"{kind} {ident} was already merged into "
                                       f"{row.merged_into_id}")
        before = {"kept": _snapshot(keep, fields), "dropped": _snapshot(drop, fields)}
        provenance = dict(keep.provenance or {})
        theirs = drop.provenance or {}
        taken = {}
        released = {}
        for name in fields:
            mine, other = _value(keep, name), _value(drop, name)
            if other in (None, ""):
                continue
            if mine in (None, ""):
                taken[name] = other
                entry = dict(theirs.get(name) or {"source": f"{kind} #{drop.id}"})
                entry["merged_from"] = drop.id
                provenance[name] = entry
            elif mine != other:
                entry = dict(provenance.get(name) or {})
                alternatives = list(entry.get("alternatives") or [])
                alternatives.append({"value": other, "merged_from": drop.id,
                                     **({"source": theirs[name].get("source")}
                                        if isinstance(theirs.get(name), dict) else {})})
                entry["alternatives"] = alternatives
                provenance[name] = entry
        # release the dropped row's unique values before the kept row takes them
        for name in UNIQUE_FIELDS & set(fields):
            if _value(drop, name) is not None:
                released[name] = _value(drop, name)
                model.update({name: None}).where(model.id == drop.id).execute()
        moved = move_links(model, drop.id, keep.id)
        model.update(merged_into=keep.id, updated_at=utcnow()).where(model.id == drop.id).execute()
        changes = {model._meta.fields[n]: v for n, v in taken.items()}
        changes.update({model.provenance: provenance, model.updated_at: utcnow()})
        model.update(changes).where(model.id == keep.id).execute()
        keep = model.get_by_id(keep.id)
        crm.audit(f"{kind}.merge", keep, actor, merged=drop.id, moved=moved, taken=taken,
                  released=released, **before)
        log.info("%s #%s merged into #%s: %s", kind, drop.id, keep.id,
                 ", ".join(f"{n} {t}" for t, n in moved.items()) or "no links")
        return keep, moved


def merge_contacts(keep_id, drop_id, actor=None):
    """Fold contact ``drop_id`` into ``keep_id``; return ``(kept contact, moved links)``."""
    return _merge(Contact, "contact", CONTACT_FIELDS, keep_id, drop_id, actor)


def merge_organisations(keep_id, drop_id, actor=None):
    """Fold organisation ``drop_id`` into ``keep_id``; return ``(kept, moved links)``."""
    keep, moved = _merge(Organisation, "organisation", ORGANISATION_FIELDS, keep_id, drop_id,
                         actor)
    from leadflow.intake.normalise import normalise_org_name

    if keep.normalised_name != normalise_org_name(keep.name):
        keep.normalised_name = normalise_org_name(keep.name)
        keep.save(only=[Organisation.normalised_name])
    return keep, moved
