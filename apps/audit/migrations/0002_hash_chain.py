"""Chain every organization's audit events: sequence, previous_hash and hash on each event.

Existing events are chained in id order (the order they were written in), from the genesis hash.
They can't be updated while the append-only trigger stands, so it is disabled for this one
transaction's update and enabled again before the migration commits.
"""

import json

from django.db import migrations, models

from apps.audit.chain import GENESIS_HASH, ChainFields, event_hash

BATCH = 2000


def chain_existing(apps, schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER audit_event_append_only")
        previous_hash, sequence, last_id = GENESIS_HASH, 0, 0
        while True:
            cursor.execute(
                """
                SELECT id, occurred_at, actor_kind, actor_id, actor_label, action,
                       target_type, target_id, target_label, metadata::text
                FROM audit_auditevent WHERE id > %s ORDER BY id LIMIT %s
                """,
                [last_id, BATCH],
            )
            rows = cursor.fetchall()
            if not rows:
                break
            updates = []
            for row in rows:
                sequence += 1
                digest = event_hash(
                    ChainFields(
                        sequence=sequence,
                        occurred_at=row[1],
                        actor_kind=row[2],
                        actor_id=row[3],
                        actor_label=row[4],
                        action=row[5],
                        target_type=row[6],
                        target_id=row[7],
                        target_label=row[8],
                        metadata=json.loads(row[9]),
                        previous_hash=previous_hash,
                    )
                )
                updates.append((sequence, previous_hash, digest, row[0]))
                previous_hash, last_id = digest, row[0]
            cursor.executemany(
                "UPDATE audit_auditevent SET sequence = %s, previous_hash = %s, hash = %s WHERE id = %s", updates
            )
        cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER audit_event_append_only")


class Migration(migrations.Migration):

    dependencies = [
        ("audit", "0001_initial"),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="auditevent",
            options={"ordering": ("-sequence",)},
        ),
        migrations.AddField(
            model_name="auditevent",
            name="sequence",
            field=models.BigIntegerField(editable=False, null=True),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="previous_hash",
            field=models.CharField(editable=False, max_length=64, null=True),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="hash",
            field=models.CharField(editable=False, max_length=64, null=True),
        ),
        migrations.RunPython(chain_existing, migrations.RunPython.noop, elidable=False),
        migrations.AlterField(
            model_name="auditevent",
            name="sequence",
            field=models.BigIntegerField(editable=False),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="previous_hash",
            field=models.CharField(editable=False, max_length=64),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="hash",
            field=models.CharField(editable=False, max_length=64),
        ),
        migrations.AddConstraint(
            model_name="auditevent",
            constraint=models.UniqueConstraint(fields=("sequence",), name="audit_event_sequence_unique"),
        ),
        migrations.AddConstraint(
            model_name="auditevent",
            constraint=models.CheckConstraint(condition=models.Q(("sequence__gte", 1)), name="audit_event_sequence_positive"),
        ),
        migrations.AddConstraint(
            model_name="auditevent",
            constraint=models.CheckConstraint(
                condition=models.Q(("hash__regex", "^[0-9a-f]{64}$"), ("previous_hash__regex", "^[0-9a-f]{64}$")),
                name="audit_event_hashes_hex",
            ),
        ),
    ]
