"""The accounts held back, for operators: quarantined by the processor, parked by the projector."""

from __future__ import annotations

from bank.config import KafkaSettings
from bank.quarantine import quarantined
from projections.models import ParkedAccount

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
