"""A transfer is (source account, transfer id): the row's key becomes derived from both, its transfer id a column."""

import uuid

from django.db import migrations, models

# As projections.apply.TRANSFER_KEY_NAMESPACE (a migration keeps its own copy of what it relies on).
TRANSFER_KEY_NAMESPACE = uuid.UUID("0b4b8f7e-3f0e-4c55-9d7e-6a1c2f5e8d30")


def rekey(apps, schema_editor):  # type: ignore[no-untyped-def]
    """Rows projected before: their id was the transfer id (one source each, or mixed: replay makes them right)."""
    Transfer = apps.get_model("projections", "Transfer")
    for transfer_id, source in list(Transfer.objects.values_list("id", "from_account")):
        key = uuid.uuid5(TRANSFER_KEY_NAMESPACE, f"{source}:{transfer_id}")
        Transfer.objects.filter(id=transfer_id).update(id=key, transfer_id=transfer_id)


class Migration(migrations.Migration):
    dependencies = [("projections", "0004_transfers")]

    operations = [
        migrations.AddField(model_name="transfer", name="transfer_id", field=models.UUIDField(null=True)),
        migrations.RunPython(rekey, migrations.RunPython.noop),
        migrations.AlterField(model_name="transfer", name="transfer_id", field=models.UUIDField(db_index=True)),
        migrations.AddConstraint(
            model_name="transfer",
            constraint=models.UniqueConstraint(fields=("from_account", "transfer_id"), name="transfer_source_id"),
        ),
    ]
