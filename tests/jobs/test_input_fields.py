"""The job submission's serializers build their fields once per class and copy them shallowly for
each instance (apps.api.serializers.FieldsBuiltOnce) instead of DRF's deep copy and model
introspection per request: each serializer still validates and renders with fields of its own,
also when threads use them at the same time."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.utils import timezone

from apps.jobs.api import JobInput, JobOutput
from apps.jobs.models import Job, JobStatus

VALID = {"prompt": "Hello", "model": "gpt-4o-mini", "max_tokens": 32}
INVALID = {"prompt": "Hello", "model": "gpt-4o-mini", "max_tokens": 0, "policy": "nonsense"}


def test_each_serializer_has_its_own_fields_bound_to_it() -> None:
    first, second = JobInput(data=VALID), JobInput(data=INVALID)
    assert first.fields.keys() == second.fields.keys() == JobInput._declared_fields.keys()
    for name in JobInput._declared_fields:
        assert first.fields[name] is not second.fields[name]
        assert first.fields[name] is not JobInput._declared_fields[name]
        assert first.fields[name].parent is first
        assert second.fields[name].parent is second
        assert first.fields[name].field_name == name


def test_validation_results_do_not_mix_between_concurrent_submissions() -> None:
    def validate(number: int) -> tuple[bool, Any]:
        data = VALID if number % 2 else INVALID
        serializer = JobInput(data=data)
        return serializer.is_valid(), serializer.errors if number % 2 == 0 else serializer.validated_data

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(validate, range(400)))
    for number, (valid, detail) in enumerate(results):
        if number % 2:
            assert valid
            assert dict(detail) == VALID
        else:
            assert not valid
            assert set(detail) == {"max_tokens", "policy"}
            assert detail["max_tokens"][0].code == "min_value"
            assert detail["policy"][0].code == "invalid_choice"


def test_rendered_jobs_do_not_mix_between_concurrent_responses() -> None:
    jobs = [
        Job(
            id=uuid.uuid4(),
            status=JobStatus.SUCCEEDED if number % 2 else JobStatus.QUEUED,
            request={"model": f"model-{number}"},
            attempts=number,
            cost_usd=number,
            created_at=timezone.now(),
        )
        for number in range(400)
    ]
    first, second = JobOutput(jobs[0]), JobOutput(jobs[1])
    assert first.fields.keys() == second.fields.keys()
    assert all(first.fields[name] is not second.fields[name] for name in JobOutput.Meta.fields)
    assert all(first.fields[name].parent is first for name in JobOutput.Meta.fields)

    with ThreadPoolExecutor(8) as pool:
        rendered = list(pool.map(lambda job: JobOutput(job).data, jobs))
    for number, (job, data) in enumerate(zip(jobs, rendered, strict=True)):
        assert (data["id"], data["status"], data["model"], data["runs"]) == (
            str(job.id),
            job.status,
            f"model-{number}",
            number,
        )
