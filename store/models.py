"""The domain, as peewee models (DESIGN.md section 1).

Lead, Contact, Organisation and Opportunity keep their CRM meanings. Around
them: Rep, Activity, InboundMessage (the raw inquiry exactly as received),
ScoringRule with RuleSetVersion, RoutingRule, Form, DigestLog, AuditEvent.

Uniqueness that the rest of leadflow relies on lives here, in the database:

- ``InboundMessage.dedup_key``: a retried delivery is stored once;
- ``Contact.email`` and ``Organisation.domain``: one contact per address, one
  organisation per company domain;
- ``Lead.open_email``: at most one *open* lead per prospect address (the column
  holds the address while the lead is open, NULL after), so two workers can
  never make two open leads for one person;
- ``Opportunity.lead``: a lead converts once;
- ``DigestLog(rep, local_date, kind)``: one digest per rep per local day.

All times are naive UTC (``store.database.utcnow``). JSON columns are TEXT
holding JSON, portable across SQLite and PostgreSQL.

Schema changes go through ``store/migrations/`` (``leadflow db upgrade``); a
test checks that a database migrated from scratch matches these models.
"""

import json

from peewee import (
    BlobField,
    BooleanField,
    CharField,
    DateField,
    DateTimeField,
    DecimalField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

from leadflow.store.database import db, utcnow


class JSONField(TextField):
    """JSON in a TEXT column: the same on SQLite and PostgreSQL."""

    field_type = "TEXT"

    def db_value(self, value):
        if value is None:
            return None
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)

    def python_value(self, value):
        if value is None:
            return None
        return json.loads(value)


class BaseModel(Model):
    class Meta:
        database = db
        legacy_table_names = False


LEAD_STATUSES = ("new", "working", "qualified", "converted", "disqualified", "spam")
OPEN_LEAD_STATUSES = ("new", "working", "qualified")
INBOUND_STATUSES = ("new", "processing", "done", "duplicate", "ignored", "failed")
CHANNELS = ("email", "form", "cli", "import")
DOMAIN_CLASSES = ("company", "free", "disposable", "internal", "unknown")
ACTIVITY_KINDS = ("call", "email", "meeting", "note", "inquiry", "reply", "status", "assignment")


class Rep(BaseModel):
    """A sales user: who gets leads and a daily digest."""

    name = CharField()
    email = CharField(unique=True)
    timezone = CharField(default="UTC")
    digest_hour = IntegerField(default=8)
    working_days = CharField(default="1,2,3,4,5")  # ISO weekdays, Monday = 1
    team = CharField(null=True, index=True)
    capacity = IntegerField(null=True)  # open leads at most; NULL: no limit
    away_until = DateField(null=True)
    role = CharField(default="rep")  # rep | admin | marketing
    active = BooleanField(default=True)
    last_assigned_at = DateTimeField(null=True)  # round-robin order
    created_at = DateTimeField(default=utcnow)


class Organisation(BaseModel):
    """The company a contact, lead or opportunity belongs to."""

    name = CharField()
    normalised_name = CharField(index=True)
    domain = CharField(null=True, unique=True)
    website = CharField(null=True)
    size = CharField(null=True)  # as told: "50 employees", "200 seats"
    employees = IntegerField(null=True)
    sector = CharField(null=True)
    needs = TextField(null=True)
    country = CharField(null=True)
    owner = ForeignKeyField(Rep, null=True, backref="organisations", on_delete="SET NULL")
    provenance = JSONField(default=dict)  # field -> {source, confidence, at}
    merged_into = ForeignKeyField("self", null=True, backref="merged", on_delete="SET NULL")
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class Contact(BaseModel):
    """A person at a prospect or customer: the one you talk to."""

    name = CharField(null=True)
    email = CharField(null=True, unique=True)  # normalised
    phone = CharField(null=True, index=True)  # E.164
    title = CharField(null=True)
    organisation = ForeignKeyField(Organisation, null=True, backref="contacts", on_delete="SET NULL")
    owner = ForeignKeyField(Rep, null=True, backref="contacts", on_delete="SET NULL")
    provenance = JSONField(default=dict)
    merged_into = ForeignKeyField("self", null=True, backref="merged", on_delete="SET NULL")
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class Lead(BaseModel):
    """Someone who showed interest and is not yet qualified."""

    status = CharField(default="new", index=True)
    # who asked
    name = CharField(null=True)
    email = CharField(null=True, index=True)  # normalised
    open_email = CharField(null=True, unique=True)  # = email while the lead is open
    email_domain = CharField(null=True)
    domain_class = CharField(default="unknown")  # company | free | disposable | internal | unknown
    phone = CharField(null=True)
    title = CharField(null=True)
    company = CharField(null=True)  # as written
    website = CharField(null=True)
    country = CharField(null=True)
    # what they asked
    subject = TextField(null=True)
    message = TextField(null=True)
    signals = JSONField(default=dict)  # budget, timeline, size, product
    fields = JSONField(default=dict)  # field -> {value, source, confidence}
    custom = JSONField(default=dict)  # form fields leadflow has no column for
    # where it came from
    channel = CharField(default="email")  # email | form | cli | import
    form = CharField(null=True)
    source = CharField(null=True)  # e.g. "email:sales@example.com", "form:contact"
    submitted_by = CharField(null=True)  # the forwarder, never the prospect
    needs_review = BooleanField(default=False)
    review_reason = TextField(null=True)
    # links
    contact = ForeignKeyField(Contact, null=True, backref="leads", on_delete="SET NULL")
    organisation = ForeignKeyField(Organisation, null=True, backref="leads", on_delete="SET NULL")
    owner = ForeignKeyField(Rep, null=True, backref="leads", on_delete="SET NULL")
    assigned_at = DateTimeField(null=True)
    assignment_reason = TextField(null=True)
    # score
    score = IntegerField(default=0, index=True)
    score_breakdown = JSONField(default=list)  # [{rule_id, rule, points|verdict, reason}]
    ruleset_version = IntegerField(null=True)
    scored_at = DateTimeField(null=True)
    qualified_at = DateTimeField(null=True)
    disqualified_reason = TextField(null=True)
    converted_at = DateTimeField(null=True)
    # history
    inquiry_count = IntegerField(default=1)
    first_inquiry_at = DateTimeField(default=utcnow)
    last_inquiry_at = DateTimeField(default=utcnow)
    status_changed_at = DateTimeField(default=utcnow)
    created_at = DateTimeField(default=utcnow, index=True)
    updated_at = DateTimeField(default=utcnow)

    class Meta:
        # a rep's leads by status: digests, `leads list --owner --status`
        indexes = ((("owner", "status"), False),)

    @property
    def qualified(self):
        return self.status in ("qualified", "converted")

    @property
    def is_open(self):
        return self.status in OPEN_LEAD_STATUSES


class InboundMessage(BaseModel):
    """A raw inquiry exactly as received, and what became of it."""

    channel = CharField()  # email | form | cli | import
    raw = BlobField()  # the message bytes, or the form payload as JSON
    content_type = CharField(null=True)
    size = IntegerField(default=0)
    dedup_key = CharField(max_length=512, null=True, unique=True)
    duplicate_of = ForeignKeyField("self", null=True, backref="duplicates", on_delete="SET NULL")
    message_id = CharField(max_length=512, null=True, index=True)
    form = CharField(null=True)
    mail_from = CharField(max_length=512, null=True)
    rcpt_to = JSONField(default=list)
    peer = CharField(null=True)
    origin = CharField(max_length=1024, null=True)  # file path, or the webhook's Origin
    received_at = DateTimeField(default=utcnow, index=True)
    status = CharField(default="new", index=True)
    classification = CharField(null=True)  # lead, reply, auto_reply, bounce, bulk, spam, ...
    reason = TextField(null=True)  # why it was ignored
    failed_step = CharField(null=True)
    error = TextField(null=True)
    attempts = IntegerField(default=0)
    claimed_by = CharField(null=True)
    claimed_at = DateTimeField(null=True)
    processed_at = DateTimeField(null=True)
    lead = ForeignKeyField(Lead, null=True, backref="inbound", on_delete="SET NULL")


class Opportunity(BaseModel):
    """A qualified lead that sales works through pipeline stages."""

    name = CharField()
    lead = ForeignKeyField(Lead, null=True, unique=True, backref="opportunities", on_delete="SET NULL")
    contact = ForeignKeyField(Contact, null=True, backref="opportunities", on_delete="SET NULL")
    organisation = ForeignKeyField(Organisation, null=True, backref="opportunities",
                                   on_delete="SET NULL")
    owner = ForeignKeyField(Rep, null=True, backref="opportunities", on_delete="SET NULL")
    stage = CharField(default="qualification", index=True)
    amount = DecimalField(max_digits=14, decimal_places=2, null=True)
    currency = CharField(null=True)
    expected_close = DateField(null=True)
    lost_reason = TextField(null=True)
    stage_changed_at = DateTimeField(default=utcnow)
    closed_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class StageChange(BaseModel):
    """One move of an opportunity from stage to stage."""

    opportunity = ForeignKeyField(Opportunity, backref="stage_changes", on_delete="CASCADE")
    from_stage = CharField(null=True)
    to_stage = CharField()
    actor = CharField(null=True)
    at = DateTimeField(default=utcnow)


class Activity(BaseModel):
    """A call, email, meeting or note; with ``due_at``, a follow-up."""

    kind = CharField()
    text = TextField(default="")
    lead = ForeignKeyField(Lead, null=True, backref="activities", on_delete="CASCADE")
    contact = ForeignKeyField(Contact, null=True, backref="activities", on_delete="SET NULL")
    opportunity = ForeignKeyField(Opportunity, null=True, backref="activities", on_delete="CASCADE")
    organisation = ForeignKeyField(Organisation, null=True, backref="activities",
                                   on_delete="SET NULL")
    rep = ForeignKeyField(Rep, null=True, backref="activities", on_delete="SET NULL")
    inbound = ForeignKeyField(InboundMessage, null=True, backref="activities", on_delete="SET NULL")
    due_at = DateField(null=True, index=True)
    done_at = DateTimeField(null=True)
    created_at = DateTimeField(default=utcnow)


class RuleSetVersion(BaseModel):
    """One version of the scoring rule set: the whole set, frozen."""

    version = IntegerField(unique=True)
    threshold = IntegerField(default=50)
    groups = JSONField(default=dict)  # group -> cap, e.g. {"fit": 50, "intent": 50}
    rules = JSONField(default=list)  # every rule as data
    action = CharField()  # add, edit, enable, disable, remove, threshold, import, rollback, init
    summary = TextField(default="")
    author = CharField(null=True)
    created_at = DateTimeField(default=utcnow)


class ScoringRule(BaseModel):
    """A rule of the current rule set (the latest RuleSetVersion, unpacked)."""

    name = CharField(unique=True)
    description = TextField(default="")
    match = CharField(default="all")  # all | any
    conditions = JSONField(default=list)  # [{field, op, value}]
    points = IntegerField(default=0)
    verdict = CharField(null=True)  # disqualify
    group = CharField(null=True)
    enabled = BooleanField(default=True)
    position = IntegerField(default=0)
    created_at = DateTimeField(default=utcnow)
    updated_at = DateTimeField(default=utcnow)


class RoutingRule(BaseModel):
    """An ordered assignment rule: conditions -> a rep or a team."""

    name = CharField(unique=True)
    position = IntegerField(default=0)
    match = CharField(default="all")
    conditions = JSONField(default=list)
    rep = ForeignKeyField(Rep, null=True, backref="routing_rules", on_delete="CASCADE")
    team = CharField(null=True)
    enabled = BooleanField(default=True)
    created_at = DateTimeField(default=utcnow)


class Form(BaseModel):
    """A web form that may post to the webhook."""

    name = CharField(unique=True)
    preset = CharField(default="plain")
    public_key = CharField(unique=True)
    secret = CharField()
    origins = JSONField(default=list)
    return_url = CharField(max_length=1024, null=True)
    mapping = JSONField(default=dict)
    required = JSONField(default=list)
    honeypot = CharField(null=True)  # the hidden spam-trap field; None: forms.DEFAULT_HONEYPOT
    created_at = DateTimeField(default=utcnow)


class DigestLog(BaseModel):
    """A digest claimed for a rep's local date: inserted before it is sent."""

    rep = ForeignKeyField(Rep, backref="digests", on_delete="CASCADE")
    local_date = DateField()
    kind = CharField(default="rep")  # rep | admin
    status = CharField(default="claimed")  # claimed, sending, sent, skipped, retry, failed
    attempts = IntegerField(default=0)
    next_attempt_at = DateTimeField(null=True)
    items = IntegerField(default=0)
    message_id = CharField(null=True)
    error = TextField(null=True)
    claimed_by = CharField(null=True)
    claimed_at = DateTimeField(default=utcnow)
    sent_at = DateTimeField(null=True)

    class Meta:
        indexes = ((("rep", "local_date", "kind"), True),)


class AuditEvent(BaseModel):
    """Who did what to which object, and when."""

    at = DateTimeField(default=utcnow, index=True)
    actor = CharField(null=True)
    action = CharField()
    object_type = CharField()
    object_id = IntegerField(null=True)
    details = JSONField(default=dict)


MODELS = [
    Rep,
    Organisation,
    Contact,
    Lead,
    InboundMessage,
    Opportunity,
    StageChange,
    Activity,
    RuleSetVersion,
    ScoringRule,
    RoutingRule,
    Form,
    DigestLog,
    AuditEvent,
]
