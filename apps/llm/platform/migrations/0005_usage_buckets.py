"""The dashboard's rollup (UsageBucket): per hour and per day, with the user, errors and a latency
histogram, and each hour's and day's total. Days already in UsageRollup are copied as day buckets
and day totals (no user, errors or latencies were kept for them, and their hours are unknown), so
long ranges don't start empty."""

import apps.llm.platform.models
import django.contrib.postgres.fields
import django.db.models.deletion
from decimal import Decimal
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('llm_platform', '0004_modalities_and_dimensions'),
        ('tenants', '0002_organization_mfa_required'),
    ]

    operations = [
        migrations.CreateModel(
            name='UsageBucket',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('span', models.CharField(choices=[('hour', 'Hour (UTC)'), ('day', 'Day (UTC)'), ('hour_total', 'Hour (UTC), all together'), ('day_total', 'Day (UTC), all together')], max_length=10)),
                ('start', models.DateTimeField(help_text="The hour's or the day's start (UTC).")),
                ('model_name', models.CharField(max_length=100)),
                ('api_key_id', models.BigIntegerField(default=0, help_text='0: not through an API key.')),
                ('user_id', models.BigIntegerField(default=0, help_text='0: not on behalf of a person (an API key).')),
                ('requests', models.PositiveBigIntegerField(default=0, help_text='Answered: provider successes and cache hits.')),
                ('cache_hits', models.PositiveBigIntegerField(default=0)),
                ('errors', models.PositiveBigIntegerField(default=0, help_text='Failed attempts (and holds the sweeper settled).')),
                ('input_tokens', models.PositiveBigIntegerField(default=0)),
                ('output_tokens', models.PositiveBigIntegerField(default=0)),
                ('cost_usd', models.DecimalField(decimal_places=8, default=Decimal('0'), max_digits=18)),
                ('saved_usd', models.DecimalField(decimal_places=8, default=Decimal('0'), max_digits=18)),
                ('latency_histogram', django.contrib.postgres.fields.ArrayField(base_field=models.BigIntegerField(), default=apps.llm.platform.models._empty_histogram, help_text="Answered requests' latencies by slot (LATENCY_SLOT_FLOORS_MS).", size=32)),
                ('organization', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='usage_buckets', to='tenants.organization')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('organization', 'span', 'start', 'model_name', 'api_key_id', 'user_id'), name='llm_bucket_unique'), models.CheckConstraint(condition=models.Q(('span__in', ['hour', 'day', 'hour_total', 'day_total'])), name='llm_bucket_span_valid'), models.CheckConstraint(condition=models.Q(('span__in', ['hour', 'day']), models.Q(('api_key_id', 0), ('model_name', ''), ('user_id', 0)), _connector='OR'), name='llm_bucket_total_has_no_dimensions'), models.CheckConstraint(condition=models.Q(('latency_histogram__len', 32)), name='llm_bucket_histogram_slots')],
            },
        ),
        migrations.RunSQL(
            """
            INSERT INTO llm_platform_usagebucket (organization_id, span, start, model_name, api_key_id, user_id,
                requests, cache_hits, errors, input_tokens, output_tokens, cost_usd, saved_usd, latency_histogram)
            SELECT organization_id, 'day', day::timestamp AT TIME ZONE 'UTC', model_name, api_key_id, 0, requests,
                cache_hits, 0, input_tokens, output_tokens, cost_usd, saved_usd, array_fill(0::bigint, ARRAY[32])
            FROM llm_platform_usagerollup
            UNION ALL
            SELECT organization_id, 'day_total', day::timestamp AT TIME ZONE 'UTC', '', 0, 0, sum(requests),
                sum(cache_hits), 0, sum(input_tokens), sum(output_tokens), sum(cost_usd), sum(saved_usd),
                array_fill(0::bigint, ARRAY[32])
            FROM llm_platform_usagerollup GROUP BY organization_id, day
            """,
            migrations.RunSQL.noop,
        ),
    ]
