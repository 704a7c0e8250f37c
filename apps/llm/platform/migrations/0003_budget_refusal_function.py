"""A function the reservation statement calls to abort itself: one statement reserves on every
budget window or on none, and says why it refused."""

from django.db import migrations

REFUSE = """
CREATE OR REPLACE FUNCTION public.cognitionos_budget_refused(reason text, window_id bigint) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    IF reason = 'missing' THEN
        RAISE EXCEPTION 'budget window missing' USING ERRCODE = 'CB404';
    END IF;
    RAISE EXCEPTION 'budget exceeded on window %', window_id USING ERRCODE = 'CB402', DETAIL = window_id::text;
END;
$$;
"""


class Migration(migrations.Migration):
    dependencies = [("llm_platform", "0002_seed_catalog")]
    operations = [
        migrations.RunSQL(REFUSE, "DROP FUNCTION IF EXISTS public.cognitionos_budget_refused(text, bigint)"),
    ]
