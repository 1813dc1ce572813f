"""The balance chart, drawn on the server as SVG: readable without JavaScript, no chart library, no CDN.

Geometry only (coordinates and labels); templates/bank/live.html#chart writes the SVG and the table
for screen readers from it, for the page and for the websocket's live updates alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

from django.utils import timezone

from bank.money import format_money
from projections import queries
from projections.apply import AccountRow
from projections.models import Account
from projections.queries import Day

RANGES = (30, 90, 365)  # the days a chart may show
WIDTH, HEIGHT = 720, 240
LINE_TOP, LINE_BOTTOM = 14, 150  # the balance line's band
BARS_MID, BARS_HALF = 198, 36  # money in (up) and out (down) around this line


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    y: float
    height: float
    kind: str  # "in" or "out"


@dataclass(frozen=True)
class Chart:
    account_id: UUID
    currency: str
    days: tuple[Day, ...]
    zone: str
    points: str  # the balance polyline
    bars: tuple[Bar, ...]
    top_label: str
    bottom_label: str
    first: date
    last: date
    range_days: int
    today_x: float
    today_y: float

    @property
    def active_days(self) -> tuple[Day, ...]:
        """The days with entries, newest first (the screen readers' table), and today's always."""
        return tuple(d for d in reversed(self.days) if d.entries or d is self.days[-1])

    @property
    def today_balance(self) -> int:
        return self.days[-1].closing_balance

    @property
    def width(self) -> int:
        return WIDTH

    @property
    def height(self) -> int:
        return HEIGHT

    @property
    def bars_mid(self) -> int:
        return BARS_MID

    @property
    def line_bottom(self) -> int:
        return LINE_BOTTOM


def build(account_id: UUID, currency: str, days: list[Day], zone: str) -> Chart:
    n = len(days)
    step = WIDTH / n
    balances = [d.closing_balance for d in days]
    low, high = min(0, *balances), max(0, *balances)
    span = (high - low) or 1

    def y(balance: int) -> float:
        return round(LINE_BOTTOM - (balance - low) / span * (LINE_BOTTOM - LINE_TOP), 1)

    xs = [round(step * i + step / 2, 1) for i in range(n)]
    points = " ".join(f"{x},{y(b)}" for x, b in zip(xs, balances, strict=True))
    biggest = max([max(d.money_in, d.money_out) for d in days] + [1])
    bar_width = round(max(step * 0.7, 1.0), 1)
    bars = []
    for x, d in zip(xs, days, strict=True):
        if d.money_in:
            h = round(max(d.money_in / biggest * BARS_HALF, 1.0), 1)
            bars.append(Bar(round(x - bar_width / 2, 1), bar_width, BARS_MID - h, h, "in"))
        if d.money_out:
            h = round(max(d.money_out / biggest * BARS_HALF, 1.0), 1)
            bars.append(Bar(round(x - bar_width / 2, 1), bar_width, BARS_MID, h, "out"))
    return Chart(
        account_id=account_id,
        currency=currency,
        days=tuple(days),
        zone=zone,
        points=points,
        bars=tuple(bars),
        top_label=format_money(high, currency),
        bottom_label=format_money(low, currency),
        first=days[0].day,
        last=days[-1].day,
        range_days=n,
        today_x=xs[-1],
        today_y=y(balances[-1]),
    )


def for_account(account: Account | AccountRow, range_days: int, zone: ZoneInfo) -> Chart:
    """The chart of the last `range_days` days (today's included) of the account, days in `zone`."""
    today = timezone.localdate(timezone=zone)
    days = queries.daily_figures(account.id, today - timedelta(days=range_days - 1), today, zone)
    return build(account.id, account.currency, days, zone.key)
