# Generated from a schema diff on 2026-11-28 00:15.
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


def up(migrator, db):
    class Rep(Model):
        name = CharField()
        email = CharField(unique=True)
        timezone = CharField(default='UTC')
        digest_hour = IntegerField(default=8)
        working_days = CharField(default='1,2,3,4,5')
        team = CharField(index=True, null=True)
        capacity = IntegerField(null=True)
        away_until = DateField(null=True)
        role = CharField(default='rep')
        active = BooleanField(default=True)
        last_assigned_at = DateTimeField(null=True)
        created_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'rep'
    db.create_tables([Rep])

    class Organisation(Model):
        name = CharField()
        normalised_name = CharField(index=True)
        domain = CharField(unique=True, null=True)
        website = CharField(null=True)
        size = CharField(null=True)
        employees = IntegerField(null=True)
        sector = CharField(null=True)
        needs = TextField(null=True)
        country = CharField(null=True)
        owner = ForeignKeyField(Rep, null=True, on_delete='SET NULL')
        provenance = TextField(default=dict)
        merged_into = ForeignKeyField('self', null=True, on_delete='SET NULL')
        created_at = DateTimeField()
        updated_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'organisation'
    db.create_tables([Organisation])

    class Contact(Model):
        name = CharField(null=True)
        email = CharField(unique=True, null=True)
        phone = CharField(index=True, null=True)
        title = CharField(null=True)
        organisation = ForeignKeyField(Organisation, null=True, on_delete='SET NULL')
        owner = ForeignKeyField(Rep, null=True, on_delete='SET NULL')
        provenance = TextField(default=dict)
        merged_into = ForeignKeyField('self', null=True, on_delete='SET NULL')
        created_at = DateTimeField()
        updated_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'contact'
    db.create_tables([Contact])

    class Lead(Model):
        status = CharField(index=True, default='new')
        name = CharField(null=True)
        email = CharField(index=True, null=True)
        open_email = CharField(unique=True, null=True)
        email_domain = CharField(null=True)
        domain_class = CharField(default='unknown')
        phone = CharField(null=True)
        title = CharField(null=True)
        company = CharField(null=True)
        website = CharField(null=True)
        country = CharField(null=True)
        subject = TextField(null=True)
        message = TextField(null=True)
        signals = TextField(default=dict)
        fields = TextField(default=dict)
        custom = TextField(default=dict)
        channel = CharField(default='email')
        form = CharField(null=True)
        source = CharField(null=True)
        submitted_by = CharField(null=True)
        needs_review = BooleanField(default=False)
        review_reason = TextField(null=True)
        contact = ForeignKeyField(Contact, null=True, on_delete='SET NULL')
        organisation = ForeignKeyField(Organisation, null=True, on_delete='SET NULL')
        owner = ForeignKeyField(Rep, null=True, on_delete='SET NULL')
        assigned_at = DateTimeField(null=True)
        assignment_reason = TextField(null=True)
        score = IntegerField(index=True, default=0)
        score_breakdown = TextField(default=list)
        ruleset_version = IntegerField(null=True)
        scored_at = DateTimeField(null=True)
        qualified_at = DateTimeField(null=True)
        disqualified_reason = TextField(null=True)
        converted_at = DateTimeField(null=True)
        inquiry_count = IntegerField(default=1)
        first_inquiry_at = DateTimeField()
        last_inquiry_at = DateTimeField()
        status_changed_at = DateTimeField()
        created_at = DateTimeField(index=True)
        updated_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'lead'
            indexes = ((('owner', 'status'), False),)
    db.create_tables([Lead])

    class Opportunity(Model):
        name = CharField()
        lead = ForeignKeyField(Lead, unique=True, null=True, on_delete='SET NULL')
        contact = ForeignKeyField(Contact, null=True, on_delete='SET NULL')
        organisation = ForeignKeyField(Organisation, null=True, on_delete='SET NULL')
        owner = ForeignKeyField(Rep, null=True, on_delete='SET NULL')
        stage = CharField(index=True, default='qualification')
        amount = DecimalField(null=True, max_digits=14, decimal_places=2)
        currency = CharField(null=True)
        expected_close = DateField(null=True)
        lost_reason = TextField(null=True)
        stage_changed_at = DateTimeField()
        closed_at = DateTimeField(null=True)
        created_at = DateTimeField()
        updated_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'opportunity'
    db.create_tables([Opportunity])

    class InboundMessage(Model):
        channel = CharField()
        raw = BlobField()
        content_type = CharField(null=True)
        size = IntegerField(default=0)
        dedup_key = CharField(unique=True, null=True, max_length=512)
        duplicate_of = ForeignKeyField('self', null=True, on_delete='SET NULL')
        message_id = CharField(index=True, null=True, max_length=512)
        form = CharField(null=True)
        mail_from = CharField(null=True, max_length=512)
        rcpt_to = TextField(default=list)
        peer = CharField(null=True)
        origin = CharField(null=True, max_length=1024)
        received_at = DateTimeField(index=True)
        status = CharField(index=True, default='new')
        classification = CharField(null=True)
        reason = TextField(null=True)
        failed_step = CharField(null=True)
        error = TextField(null=True)
        attempts = IntegerField(default=0)
        claimed_by = CharField(null=True)
        claimed_at = DateTimeField(null=True)
        processed_at = DateTimeField(null=True)
        lead = ForeignKeyField(Lead, null=True, on_delete='SET NULL')
        class Meta:
            database = db
            table_name = 'inbound_message'
    db.create_tables([InboundMessage])

    class Activity(Model):
        kind = CharField()
        text = TextField(default='')
        lead = ForeignKeyField(Lead, null=True, on_delete='CASCADE')
        contact = ForeignKeyField(Contact, null=True, on_delete='SET NULL')
        opportunity = ForeignKeyField(Opportunity, null=True, on_delete='CASCADE')
        organisation = ForeignKeyField(Organisation, null=True, on_delete='SET NULL')
        rep = ForeignKeyField(Rep, null=True, on_delete='SET NULL')
        inbound = ForeignKeyField(InboundMessage, null=True, on_delete='SET NULL')
        due_at = DateField(index=True, null=True)
        done_at = DateTimeField(null=True)
        created_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'activity'
    db.create_tables([Activity])

    class AuditEvent(Model):
        at = DateTimeField(index=True)
        actor = CharField(null=True)
        action = CharField()
        object_type = CharField()
        object_id = IntegerField(null=True)
        details = TextField(default=dict)
        class Meta:
            database = db
            table_name = 'audit_event'
    db.create_tables([AuditEvent])

    class DigestLog(Model):
        rep = ForeignKeyField(Rep, on_delete='CASCADE')
        local_date = DateField()
        kind = CharField(default='rep')
        status = CharField(default='claimed')
        attempts = IntegerField(default=0)
        next_attempt_at = DateTimeField(null=True)
        items = IntegerField(default=0)
        message_id = CharField(null=True)
        error = TextField(null=True)
        claimed_by = CharField(null=True)
        claimed_at = DateTimeField()
        sent_at = DateTimeField(null=True)
        class Meta:
            database = db
            table_name = 'digest_log'
            indexes = ((('rep', 'local_date', 'kind'), True),)
    db.create_tables([DigestLog])

    class Form(Model):
        name = CharField(unique=True)
        preset = CharField(default='plain')
        public_key = CharField(unique=True)
        secret = CharField()
        origins = TextField(default=list)
        return_url = CharField(null=True, max_length=1024)
        mapping = TextField(default=dict)
        required = TextField(default=list)
        honeypot = CharField(null=True)
        created_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'form'
    db.create_tables([Form])

    class RoutingRule(Model):
        name = CharField(unique=True)
        position = IntegerField(default=0)
        match = CharField(default='all')
        conditions = TextField(default=list)
        rep = ForeignKeyField(Rep, null=True, on_delete='CASCADE')
        team = CharField(null=True)
        enabled = BooleanField(default=True)
        created_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'routing_rule'
    db.create_tables([RoutingRule])

    class RuleSetVersion(Model):
        version = IntegerField(unique=True)
        threshold = IntegerField(default=50)
        groups = TextField(default=dict)
        rules = TextField(default=list)
        action = CharField()
        summary = TextField(default='')
        author = CharField(null=True)
        created_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'rule_set_version'
    db.create_tables([RuleSetVersion])

    class ScoringRule(Model):
        name = CharField(unique=True)
        description = TextField(default='')
        match = CharField(default='all')
        conditions = TextField(default=list)
        points = IntegerField(default=0)
        verdict = CharField(null=True)
        group = CharField(null=True)
        enabled = BooleanField(default=True)
        position = IntegerField(default=0)
        created_at = DateTimeField()
        updated_at = DateTimeField()
        class Meta:
            database = db
            table_name = 'scoring_rule'
    db.create_tables([ScoringRule])

    class StageChange(Model):
        opportunity = ForeignKeyField(Opportunity, on_delete='CASCADE')
        from_stage = CharField(null=True)
        to_stage = CharField()
        actor = CharField(null=True)
        at = DateTimeField()
        class Meta:
            database = db
            table_name = 'stage_change'
    db.create_tables([StageChange])


def down(migrator, db):
    migrator.migrate(migrator.drop_table('stage_change'))
    migrator.migrate(migrator.drop_table('scoring_rule'))
    migrator.migrate(migrator.drop_table('rule_set_version'))
    migrator.migrate(migrator.drop_table('routing_rule'))
    migrator.migrate(migrator.drop_table('form'))
    migrator.migrate(migrator.drop_table('digest_log'))
    migrator.migrate(migrator.drop_table('audit_event'))
    migrator.migrate(migrator.drop_table('activity'))
    migrator.migrate(migrator.drop_table('inbound_message'))
    migrator.migrate(migrator.drop_table('opportunity'))
    migrator.migrate(migrator.drop_table('lead'))
    migrator.migrate(migrator.drop_table('contact'))
    migrator.migrate(migrator.drop_table('organisation'))
    migrator.migrate(migrator.drop_table('rep'))
