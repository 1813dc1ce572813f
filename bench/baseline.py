"""The update-in-place way, for the benchmarks only: what a bank without Kafka would do.

Mounted at /bench/deposit-in-place/<id> by bench/urls.py (bench.settings), never in the app's URLs. Same
server, processes, middleware, session store and login, the same form (MoveMoneyForm: amount and
command id) and the same answer as the real deposit view (web.views.move_accepted: a fresh command
id and the row of the deposit, here its outcome, since it is decided at once); in between,
SELECT … FOR UPDATE and UPDATE of a balance row in PostgreSQL instead of sending a command.
"""

from __future__ import annotations

from types import SimpleNamespace
from uuid import UUID

from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_POST

from web.forms import MoveMoneyForm
from web.views import move_accepted

TABLE = "bench_balance"
CURRENCY = "EUR"  # the benchmark's accounts are all in euros


def ensure_table() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} (id uuid PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL)"
        )


@require_POST
def deposit_in_place(request: HttpRequest, account_id: UUID) -> HttpResponse:
    form = MoveMoneyForm(request.POST, currency=CURRENCY, prefix="deposit")
    if not form.is_valid():
        return HttpResponse(form.errors.as_text(), status=422)
    amount: int = form.cleaned_data["amount"]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"SELECT balance FROM {TABLE} WHERE id = %s AND owner = %s FOR UPDATE", [account_id, str(request.user.pk)]
        )
        row = cursor.fetchone()
        if row is None:
            return HttpResponse(status=404)
        cursor.execute(f"UPDATE {TABLE} SET balance = %s WHERE id = %s", [row[0] + amount, account_id])
    entry = SimpleNamespace(
        type="MoneyDeposited",
        amount=amount,
        account_id=account_id,
        command_id=form.cleaned_data["command_id"],
        command="",
        reason="",
    )
    return move_accepted("deposit", {"entry": entry, "account": SimpleNamespace(currency=CURRENCY)}, status=200)
