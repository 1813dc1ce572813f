"""What waits, for operators: accounts quarantined by the processor or parked by the projector, and
transfers in flight (`bank_status` and the admin's operations page)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings

from bank.config import KafkaSettings
from bank.quarantine import quarantined
from projections.models import ParkedAccount, Transfer

IN_FLIGHT = ("sent", "credited", "refused")

RELEASE_HINT = "release with: manage.py release_account ACCOUNT_ID (or the admin's Release action)"


def held_back_lines(kafka: KafkaSettings) -> list[str]:
    """One line per quarantined or parked account, after a count of each."""
    quarantine = quarantined(kafka)
    parked = list(ParkedAccount.objects.filter(topic=kafka.events_topic))
    lines = [f"quarantined by the processor: {len(quarantine)}"]
    lines += [f"  {account_id}  {why}" for account_id, why in sorted(quarantine.items())]
    lines.append(f"parked by the projector: {len(parked)}")
    lines += [
        f"  {p.account_id}  since {p.since:%Y-%m-%d %H:%M:%S}, at {p.topic}[{p.partition}]@{p.offset}: {p.reason}"
        for p in parked
    ]
    if quarantine or parked:
        lines.append(RELEASE_HINT)
    return lines


def transfers_in_flight() -> str:
    """One line: transfers debited and not yet completed or refunded, by step, the oldest, and how many are flagged."""
    from django.db.models import Count, Min
    from django.utils import timezone

    pending = Transfer.objects.filter(status__in=IN_FLIGHT)
    by_status = dict(pending.order_by().values("status").annotate(n=Count("id")).values_list("status", "n"))
    total = sum(by_status.values())
    if not total:
        return "transfers in flight: 0"
    oldest = pending.aggregate(oldest=Min("debited_at"))["oldest"]
    flag_after = settings.BANK_TRANSFER_FLAG_AFTER
    flagged = pending.filter(debited_at__lt=timezone.now() - timedelta(seconds=flag_after)).count()
    steps = ", ".join(f"{by_status.get(s, 0)} {s}" for s in IN_FLIGHT)
    age = f"; oldest debited {(timezone.now() - oldest).total_seconds():.0f}s ago" if oldest else ""
    return f"transfers in flight: {total} ({steps}){age}; {flagged} flagged (in flight over {flag_after}s)"


# Where a transfer in flight waits, named by what has happened and what it waits for.
STEPS = ("debited_awaiting_credit", "credited_awaiting_completion", "refused_awaiting_refund")
_ANSWERS = {None: STEPS[0], "TransferCredited": STEPS[1], "TransferRefused": STEPS[2]}

# From the accounts' own projections, not the transfers table: the sources are the accounts whose own
# balance row says money is in flight; their histories say which transfers it is (debited more often than
# ended); the destination's history says how far each got. A transfer stuck for any reason is found here,
# whatever the transfers table holds.
STUCK_SQL = """
WITH open AS (
    SELECT e.account_id AS source, e.transfer_id, max(e.counterparty::text)::uuid AS destination,
           max(e.occurred_at) FILTER (WHERE e.type = 'TransferDebited') AS debited_at
    FROM projections_auditentry e JOIN projections_account a ON a.id = e.account_id
    WHERE a.in_flight <> 0 AND e.type IN ('TransferDebited', 'TransferCompleted', 'TransferRefunded')
    GROUP BY e.account_id, e.transfer_id
    HAVING count(*) FILTER (WHERE e.type = 'TransferDebited')
         > count(*) FILTER (WHERE e.type IN ('TransferCompleted', 'TransferRefunded'))
)
SELECT (SELECT d.type FROM projections_auditentry d
        WHERE d.account_id = o.destination AND d.transfer_id = o.transfer_id AND d.counterparty = o.source
          AND d.type IN ('TransferCredited', 'TransferRefused')
        ORDER BY d.sequence DESC LIMIT 1) AS answer,
       count(*), min(o.debited_at)
FROM open o GROUP BY 1
"""


@dataclass(frozen=True)
class Waiting:
    """Transfers in flight at one step: how many, and how long the oldest has been in flight (seconds)."""

    count: int = 0
    oldest_seconds: float = 0.0


def stuck_transfers() -> dict[str, Waiting]:
    """Transfers in flight per step, from the accounts' own projections (see STUCK_SQL); every step is present."""
    from django.db import connection
    from django.utils import timezone

    now = timezone.now()
    found = {step: Waiting() for step in STEPS}
    with connection.cursor() as cursor:
        cursor.execute(STUCK_SQL)
        for answer, count, oldest in cursor.fetchall():
            step = _ANSWERS.get(answer, STEPS[0])
            age = max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
            before = found[step]
            found[step] = Waiting(before.count + count, max(before.oldest_seconds, age))
    return found


def stuck_lines() -> list[str]:
    """What `bank_status` and the operations page print of stuck_transfers()."""
    found = stuck_transfers()
    total = sum(w.count for w in found.values())
    lines = [f"in flight by the accounts' histories: {total}"]
    for step, waiting in found.items():
        if waiting.count:
            lines.append(f"  {step.replace('_', ' ')}: {waiting.count}, oldest {waiting.oldest_seconds:.0f}s")
    return lines
