"""The update-in-place way, for the benchmarks only: what a bank without Kafka would do.

Mounted at /bench/deposit-in-place/<id> by bench/urls.py (bench.settings), never in the app's URLs. Same server, same
login, CSRF and form checks as the real deposit view; then SELECT … FOR UPDATE and UPDATE of a
balance row in PostgreSQL, instead of sending a command.
"""

from __future__ import annotations

from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_POST

from bank.money import AmountError, parse_amount

TABLE = "bench_balance"


def ensure_table() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id uuid PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL)"
        )


@require_POST
def deposit_in_place(request: HttpRequest, account_id: UUID) -> HttpResponse:
    try:
        amount = parse_amount(request.POST.get("amount", ""), settings.BANK_MAX_AMOUNT)
    except AmountError as error:
        return HttpResponse(str(error), status=422)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT balance FROM {TABLE} WHERE id = %s AND owner = %s FOR UPDATE", [account_id, str(request.user.pk)]
        )
        row = cursor.fetchone()
        if row is None:
            return HttpResponse(status=404)
        cursor.execute(f"UPDATE {TABLE} SET balance = %s WHERE id = %s", [row[0] + amount, account_id])
    return HttpResponse(f"{row[0] + amount}", status=200)
