"""Chain asynchronously: events are inserted without `sequence`, `previous_hash` and `hash`, and the
chainer sets the three once, after the event's transaction committed (docs/audit.md).

Existing events keep their chain fields and hashes untouched. The append-only trigger keeps its name
but now lets an UPDATE through that only sets the chain fields of an unchained event; every other
UPDATE, and every DELETE, is still refused. Its function lives in public (as the first one does), so
schemas cloned from the template point at it; it is created under an advisory lock because every
tenant schema's migration replaces it.
"""

from django.db import migrations, models

APPEND_ONLY_CHAINED_ONCE = """
SELECT pg_advisory_xact_lock(hashtext('cognitionos_audit_append_only'));
CREATE OR REPLACE FUNCTION public.cognitionos_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- The only change allowed: an unchained event gets its chain fields; every other column as it was.
    IF TG_OP = 'UPDATE'
       AND OLD.sequence IS NULL AND OLD.previous_hash IS NULL AND OLD.hash IS NULL
       AND (to_jsonb(NEW) - ARRAY['sequence', 'previous_hash', 'hash'])
           = (to_jsonb(OLD) - ARRAY['sequence', 'previous_hash', 'hash'])
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
DROP TRIGGER audit_event_append_only ON audit_auditevent;
CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION public.cognitionos_audit_append_only();
"""

APPEND_ONLY_AS_BEFORE = """
DROP TRIGGER audit_event_append_only ON audit_auditevent;
CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION public.cognitionos_forbid_mutation();
"""


class Migration(migrations.Migration):

    dependencies = [
        ('audit', '0002_hash_chain'),
    ]

    operations = [
        migrations.RunSQL(APPEND_ONLY_CHAINED_ONCE, APPEND_ONLY_AS_BEFORE),
        migrations.AlterModelOptions(
            name='auditevent',
            options={'ordering': ('-id',)},
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='hash',
            field=models.CharField(editable=False, max_length=64, null=True),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='previous_hash',
            field=models.CharField(editable=False, max_length=64, null=True),
        ),
        migrations.AlterField(
            model_name='auditevent',
            name='sequence',
            field=models.BigIntegerField(editable=False, null=True),
        ),
        migrations.AddIndex(
            model_name='auditevent',
            index=models.Index(condition=models.Q(('sequence__isnull', True)), fields=['id'], name='audit_event_unchained'),
        ),
        migrations.AddConstraint(
            model_name='auditevent',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('hash__isnull', True), ('previous_hash__isnull', True), ('sequence__isnull', True)), models.Q(('hash__isnull', False), ('previous_hash__isnull', False), ('sequence__isnull', False)), _connector='OR'), name='audit_event_chained_whole'),
        ),
    ]
