"""Read models built from bank.events. Only the projector and replay write them."""

from __future__ import annotations

from django.db import models


class Account(models.Model):
    """One row per opened account: what the dashboard shows. Every value comes from events."""

    id = models.UUIDField(primary_key=True)
    owner = models.CharField(max_length=64, db_index=True)  # the owner's user id, as the event has it
    name = models.CharField(max_length=80)
    currency = models.CharField(max_length=3)
    balance = models.BigIntegerField()  # minor units
    # A database default too: a writer that does not know the column yet (an older version mid-deploy) still inserts.
    in_flight = models.BigIntegerField(default=0, db_default=0)  # sent by transfers not yet completed or refunded
    status = models.CharField(max_length=10)
    opened_at = models.DateTimeField()
    last_sequence = models.PositiveIntegerField()
    updated_at = models.DateTimeField()  # time of the last event, not of the write: replays stay identical

    class Meta:
        ordering = ["opened_at", "id"]
        # The admin's actions that issue commands, each granted on its own (viewing grants none of them).
        permissions = [
            ("deposit_correction", "Can deposit a correction into accounts"),
            ("close_account", "Can close accounts"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"


class AuditEntry(models.Model):
    """One row per event of an account, rejections included: the account's history."""

    event_id = models.UUIDField(primary_key=True)
    account_id = models.UUIDField()
    sequence = models.PositiveIntegerField()
    type = models.CharField(max_length=32)
    amount = models.BigIntegerField(null=True)
    balance_after = models.BigIntegerField(null=True)
    occurred_at = models.DateTimeField()
    # "user:<username>" or "admin:<username>"; Django user names may be 150 characters.
    actor = models.CharField(max_length=200)
    command_id = models.UUIDField(db_index=True)
    reason = models.CharField(max_length=40, blank=True)
    command = models.CharField(max_length=32, blank=True, default="")  # the rejected command's type, if rejected
    transfer_id = models.UUIDField(null=True, blank=True)
    counterparty = models.UUIDField(null=True, blank=True)  # the other account of a transfer

    class Meta:
        ordering = ["-sequence"]
        constraints = [models.UniqueConstraint(fields=["account_id", "sequence"], name="audit_account_sequence")]
        # The account as of a moment, statements and date filters look entries up by time.
        indexes = [models.Index(fields=["account_id", "occurred_at"], name="audit_account_time")]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.account_id} #{self.sequence} {self.type}"


class Transfer(models.Model):
    """One row per transfer that left its source: the saga's steps and where it stands.

    Its events come from two partitions, so they may be projected in any order: every
    column is set by one kind of event, and the status follows from which are set.
    """

    class Status(models.TextChoices):
        SENT = "sent"  # debited from the source, not yet answered by the destination
        CREDITED = "credited"  # in the destination's balance; the source is not told yet
        REFUSED = "refused"  # the destination said no; the refund is on its way
        COMPLETED = "completed"
        REFUNDED = "refunded"

    # A transfer is (source account, transfer id): the key is derived from both (projections.apply.transfer_key),
    # so one transfer id sent from two accounts is two rows.
    id = models.UUIDField(primary_key=True)
    transfer_id = models.UUIDField(db_index=True)
    from_account = models.UUIDField(db_index=True)
    to_account = models.UUIDField(db_index=True)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=10, choices=Status.choices)
    reason = models.CharField(max_length=40, blank=True)
    debited_at = models.DateTimeField(null=True)
    credited_at = models.DateTimeField(null=True)
    refused_at = models.DateTimeField(null=True)
    completed_at = models.DateTimeField(null=True)
    refunded_at = models.DateTimeField(null=True)

    class Meta:
        ordering = ["-debited_at", "id"]
        indexes = [models.Index(fields=["status"], name="transfer_status")]
        constraints = [models.UniqueConstraint(fields=["from_account", "transfer_id"], name="transfer_source_id")]

    def __str__(self) -> str:
        return f"transfer {self.transfer_id} from {self.from_account} ({self.status})"


class Checkpoint(models.Model):
    """The next offset of bank.events each projection will apply, per partition (written with its rows)."""

    projection = models.CharField(max_length=32)
    topic = models.CharField(max_length=200)
    partition = models.PositiveIntegerField()
    next_offset = models.BigIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["projection", "topic", "partition"], name="checkpoint_position")]

    def __str__(self) -> str:
        return f"{self.projection} {self.topic}[{self.partition}] → {self.next_offset}"


class DeadLetter(models.Model):
    """A message the projector could not decode or apply; its copy is also on bank.deadletters."""

    topic = models.CharField(max_length=200)
    partition = models.PositiveIntegerField()
    offset = models.BigIntegerField()
    key = models.BinaryField(null=True)
    value = models.BinaryField(null=True)
    error = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    requeued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("requeue_deadletter", "Can re-queue dead letters")]
        constraints = [models.UniqueConstraint(fields=["topic", "partition", "offset"], name="deadletter_origin")]

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


class ParkedAccount(models.Model):
    """An account whose projection the projector stopped applying: a sequence gap, a poison record naming it,
    or a row the database refused. Its events from `offset` on are applied once an operator releases it
    (manage.py release_account), and the row goes away."""

    account_id = models.UUIDField(primary_key=True)
    topic = models.CharField(max_length=200)
    partition = models.PositiveIntegerField()
    offset = models.BigIntegerField()  # the first event of the account that was not applied
    reason = models.TextField()
    since = models.DateTimeField()

    class Meta:
        ordering = ["since"]
        # Releasing sends ReleaseAccount (admin action): its own permission, apart from viewing.
        permissions = [("release_account", "Can release a quarantined or parked account")]

    def __str__(self) -> str:
        return f"{self.account_id} parked at {self.topic}[{self.partition}]@{self.offset}"


class DailyBalance(models.Model):
    """One row per account per UTC day on which the account had an event: the data behind a balance chart and
    statements. `entries` counts the events that moved money; `last_sequence` is the day's last event (the
    sequence guard reads it, so an event is never counted twice)."""

    pk = models.CompositePrimaryKey("account_id", "day")
    account_id = models.UUIDField()
    day = models.DateField()  # UTC
    closing_balance = models.BigIntegerField()
    money_in = models.BigIntegerField()
    money_out = models.BigIntegerField()
    entries = models.PositiveIntegerField()
    last_sequence = models.PositiveIntegerField()

    class Meta:
        ordering = ["account_id", "day"]
        # The admin lists the newest days of every account first, a keyset page at a time (web/daily_balances.py).
        indexes = [models.Index(fields=["day", "account_id"], name="daily_balance_day")]

    def __str__(self) -> str:
        return f"{self.account_id} {self.day}: {self.closing_balance}"


class Generation(models.Model):
    """Which generation of a projection's tables is live (projections/generations.py explains generations).

    No row: generation 1, the tables migrations made. `live = 0`: not deployed yet (a projection added to a bank
    that already has history): the projector leaves it alone until `rebuild` backfills it and swaps it in.
    `old`: the generation swapped out, kept for `rebuild --rollback` until `rebuild --drop-old`."""

    projection = models.CharField(max_length=32, primary_key=True)
    live = models.PositiveIntegerField()
    old = models.PositiveIntegerField(null=True, blank=True)
    swapped_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.projection}: g{self.live} live" + (f", g{self.old} kept" if self.old is not None else "")


class RebuildProgress(models.Model):
    """The running (or last) rebuild's phase and figures: what the terminal's bar shows, for bank_status and the
    operations page. One row, written by the rebuild on its own connection (outside its long transactions)."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    generation = models.PositiveIntegerField()
    projections = models.CharField(max_length=200)
    phase = models.CharField(max_length=16)  # create, fill, index, catch-up, swap, done, failed
    events_read = models.BigIntegerField(default=0)
    events_total = models.BigIntegerField(default=0)  # offsets to read in the fill: an upper bound
    rate = models.FloatField(default=0.0)  # events/s
    eta_seconds = models.FloatField(null=True)
    lag = models.BigIntegerField(null=True)  # catch-up: offsets the generation is behind the live one
    message = models.TextField(blank=True, default="")
    started_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"rebuild g{self.generation} ({self.projections}): {self.phase}"
