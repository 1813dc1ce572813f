from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("projections", "0002_audit_command_and_action_permissions"),
    ]

    operations = [
        migrations.CreateModel(
            name="ParkedAccount",
            fields=[
                ("account_id", models.UUIDField(primary_key=True, serialize=False)),
                ("topic", models.CharField(max_length=200)),
                ("partition", models.PositiveIntegerField()),
                ("offset", models.BigIntegerField()),
                ("reason", models.TextField()),
                ("since", models.DateTimeField()),
            ],
            options={
                "ordering": ["since"],
                "permissions": [("release_account", "Can release a quarantined or parked account")],
            },
        ),
        migrations.AlterField(
            model_name="auditentry",
            name="actor",
            field=models.CharField(max_length=200),
        ),
    ]
