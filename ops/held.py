"""What waits, for operators: accounts quarantined by the processor or parked by the projector, and
transfers in flight (`bank_status` and the admin's operations page)."""

from __future__ import annotations

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
