"""The portal's jobs pages: the list (filters, keyset pages, live rows), a job's detail and its
progress stream, submit (validated as the API validates, queued after the commit) and cancel, per
organization and per role, with a constant number of queries per list page."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.accounts.models import User
from apps.agents.models import Agent
from apps.audit.models import AuditEvent
from apps.jobs.models import Job, JobStatus
from apps.tenants.connection import organization_schema
from apps.tenants.models import Organization
from tests.factories import member_make
from tests.portal.conftest import ClientFor

ROLES_WHO_SUBMIT = ("owner", "admin", "developer")
ROLES_WHO_ONLY_SEE = ("viewer", "billing")


def signed_in(client_for: ClientFor, organization: Organization, role: str) -> tuple[Client, User]:
    user = member_make(organization=organization, role=role)
    client = client_for(f"{organization.slug}.localhost")
    client.force_login(user)
    return client, user


def job_make(
    organization: Organization,
    *,
    status: str = JobStatus.QUEUED,
    model: str = "simulated-mini",
    agent: Agent | None = None,
    created_at: dt.datetime | None = None,
    prompt: str = "Say hello",
    answer: str = "Hello!",
) -> Job:
    now = timezone.now()
    fields: dict[str, Any] = {}
    if status != JobStatus.QUEUED:
        fields.update(started_at=now, heartbeat_at=now, attempts=1)
    if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
        fields["finished_at"] = now
    if status == JobStatus.SUCCEEDED:
        fields["result"] = {"text": answer, "model": model, "cache": "miss", "usage": {"prompt_tokens": 3}}
        fields["cost_usd"] = Decimal("0.000123")
    if status == JobStatus.FAILED:
        fields.update(error_class="provider_error", error_message="the provider answered 500 <b>twice</b>")
    with organization_schema(organization):
        job = Job.objects.create(
            status=status,
            request={"model": model, "messages": [{"role": "user", "content": prompt}]},
            agent=agent,
            principal_kind="user",
            principal_label="someone@example.com",
            **fields,
        )
        if created_at is not None:
            Job.objects.filter(pk=job.pk).update(created_at=created_at)
            job.refresh_from_db()
    return job


def agent_make(organization: Organization, name: str = "summarizer", **fields: Any) -> Agent:
    with organization_schema(organization):
        return Agent.objects.create(name=name, model=fields.pop("model", "simulated-mini"), **fields)


def job_ids(html: str) -> list[str]:
    return re.findall(r'<tr id="job-([0-9a-f-]{36})"', html)


# -- the list -------------------------------------------------------------------------------------


def test_the_list_shows_jobs_newest_first_with_status_model_agent_and_cost(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    agent = agent_make(organization)
    older = job_make(organization, status=JobStatus.SUCCEEDED, created_at=timezone.now() - dt.timedelta(hours=1))
    newer = job_make(organization, status=JobStatus.FAILED, agent=agent, model="gpt-4o-mini")
    client, _ = signed_in(client_for, organization, "viewer")
    page = client.get("/jobs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert job_ids(html) == [str(newer.pk), str(older.pk)]
    assert 'href="/jobs/"' in html and 'aria-current="page"' in html  # in the navigation, current
    assert "Succeeded" in html and "Failed" in html and "summarizer" in html and "gpt-4o-mini" in html
    assert "$0.000123" in html
    # Nothing unfinished on the page: nothing polls.
    assert 'id="jobs-live"' not in html or "hx-trigger" not in html.split('id="jobs-live"')[1].split(">")[0]


def test_an_empty_list_says_what_to_do_first(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    developer, _ = signed_in(client_for, two_tenants[0], "developer")
    html = developer.get("/jobs/").content.decode()
    assert "Submit your first job" in html and 'href="/jobs/new/"' in html
    viewer, _ = signed_in(client_for, two_tenants[0], "viewer")
    html = viewer.get("/jobs/").content.decode()
    assert "No jobs yet" in html and 'href="/jobs/new/"' not in html


def test_filters_by_status_agent_model_and_time(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    agent = agent_make(organization)
    long_ago = job_make(organization, status=JobStatus.SUCCEEDED, created_at=timezone.now() - dt.timedelta(days=3))
    queued = job_make(organization, model="gpt-4o-mini")
    running = job_make(organization, status=JobStatus.RUNNING, agent=agent)
    failed = job_make(organization, status=JobStatus.FAILED)
    client, _ = signed_in(client_for, organization, "viewer")

    both = client.get("/jobs/", {"status": ["queued", "running"]})
    assert set(job_ids(both.content.decode())) == {str(queued.pk), str(running.pk)}
    assert job_ids(client.get("/jobs/", {"agent": str(agent.pk)}).content.decode()) == [str(running.pk)]
    assert job_ids(client.get("/jobs/", {"model": "gpt-4o-mini"}).content.decode()) == [str(queued.pk)]
    since = (timezone.now() - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    recent = client.get("/jobs/", {"created_after": since})
    assert set(job_ids(recent.content.decode())) == {str(queued.pk), str(running.pk), str(failed.pk)}
    until = client.get("/jobs/", {"created_before": since})
    assert job_ids(until.content.decode()) == [str(long_ago.pk)]
    none = client.get("/jobs/", {"model": "no-such-model"}).content.decode()
    assert job_ids(none) == [] and "No jobs match these filters" in none


def test_bad_filters_answer_400_with_the_message_at_the_field(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    job_make(two_tenants[0])
    client, _ = signed_in(client_for, two_tenants[0], "viewer")
    response = client.get("/jobs/", {"status": "exploded", "created_after": "yesterday-ish"})
    assert response.status_code == 400
    html = response.content.decode()
    assert "Some filters are not valid" in html and html.count('class="field__error"') >= 2
    assert job_ids(html) == []


def test_pages_of_fifty_by_keyset_keep_the_filters(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    start = timezone.now() - dt.timedelta(hours=2)
    made = [job_make(organization, created_at=start + dt.timedelta(seconds=n)) for n in range(60)]
    # Two jobs of one transaction share their time: the id breaks the tie, none is lost or repeated.
    job_make(organization, created_at=start + dt.timedelta(seconds=30))
    job_make(organization, status=JobStatus.FAILED)  # filtered out below
    client, _ = signed_in(client_for, organization, "viewer")
    first = client.get("/jobs/", {"status": "queued"}).content.decode()
    first_ids = job_ids(first)
    assert len(first_ids) == 50 and first_ids[0] == str(made[-1].pk)
    older = re.search(r'href="\?([^"#]+)#jobs-heading">Older jobs', first)
    assert older is not None
    query = older.group(1).replace("&amp;", "&")
    assert "status=queued" in query
    second_ids = job_ids(client.get(f"/jobs/?{query}").content.decode())
    assert len(second_ids) == 11 and not set(first_ids) & set(second_ids)
    with organization_schema(organization):
        assert set(first_ids) | set(second_ids) == {
            str(pk) for pk in Job.objects.filter(status="queued").values_list("pk", flat=True)
        }
    second = client.get(f"/jobs/?{query}").content.decode()
    newer = re.search(r'href="\?([^"#]+)#jobs-heading">← Newer jobs', second)
    assert newer is not None
    assert job_ids(client.get("/jobs/?" + newer.group(1).replace("&amp;", "&")).content.decode()) == first_ids
    # A forged cursor is ignored (the first page), never an error; one past the calendar too.
    assert client.get("/jobs/", {"before": "999999999999999999_" + "0" * 32}).status_code == 200
    assert (
        job_ids(client.get("/jobs/", {"status": "queued", "before": "99999999999999999999_zz"}).content.decode())[:1]
        == first_ids[:1]
    )


def test_the_list_page_makes_a_constant_number_of_queries(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    agents = [agent_make(organization, name=f"agent {n}") for n in range(3)]
    client, _ = signed_in(client_for, organization, "developer")

    def queries() -> int:
        client.get("/jobs/")  # warm the session and the permission caches
        with CaptureQueriesContext(connection) as captured:
            assert client.get("/jobs/").status_code == 200
        return len(captured)

    job_make(organization, agent=agents[0])
    few = queries()
    for n in range(40):
        job_make(organization, status=[JobStatus.SUCCEEDED, JobStatus.RUNNING][n % 2], agent=agents[n % 3])
    assert queries() == few


def test_live_rows_follow_unfinished_jobs_and_stop_polling_when_they_end(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    queued = job_make(organization)
    running = job_make(organization, status=JobStatus.RUNNING)
    done = job_make(organization, status=JobStatus.SUCCEEDED)
    client, _ = signed_in(client_for, organization, "viewer")
    html = client.get("/jobs/").content.decode()
    poller = re.search(r'<div id="jobs-live" hx-get="([^"]+)" hx-trigger="every 2s"', html)
    assert poller is not None
    live_url = poller.group(1).replace("&amp;", "&")
    assert str(queued.pk) in live_url and str(running.pk) in live_url and str(done.pk) not in live_url

    with CaptureQueriesContext(connection) as captured:
        fragment = client.get(live_url).content.decode()
    assert 'hx-swap-oob="true"' in fragment and set(job_ids(fragment)) == {str(queued.pk), str(running.pk)}
    assert "hx-trigger" in fragment
    with organization_schema(organization):
        Job.objects.filter(pk__in=[queued.pk, running.pk]).update(
            status=JobStatus.SUCCEEDED, finished_at=timezone.now(), result={"text": "done", "model": "m"}
        )
    ended = client.get(live_url).content.decode()
    assert ended.count("Succeeded") == 2 and "hx-trigger" not in ended  # nothing left to follow
    assert len(captured) < 12  # one query for the rows, whatever their number (plus the session's)
    # Ids of another organization or of nothing are ignored.
    other = job_make(two_tenants[1])
    assert job_ids(client.get(f"/jobs/live/?id={other.pk}&id=not-a-uuid").content.decode()) == []


# -- a job ----------------------------------------------------------------------------------------


def test_the_detail_shows_input_result_cost_timings_runs_and_error_escaped(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    succeeded = job_make(organization, status=JobStatus.SUCCEEDED, prompt="<script>alert(1)</script>", answer="Hi <b>")
    failed = job_make(organization, status=JobStatus.FAILED)
    client, _ = signed_in(client_for, organization, "viewer")
    html = client.get(f"/jobs/{succeeded.pk}/").content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>alert(1)" not in html
    assert "Hi &lt;b&gt;" in html and "$0.000123" in html
    for label in ("Submitted", "Started", "Finished", "Waited", "Ran", "Runs"):
        assert f"<dt>{label}</dt>" in html
    assert "data-job-events" not in html  # finished: nothing to follow
    html = client.get(f"/jobs/{failed.pk}/").content.decode()
    assert "provider_error" in html and "the provider answered 500 &lt;b&gt;twice&lt;/b&gt;" in html
    assert "No answer: the job failed" in html


def test_a_job_whose_content_was_not_kept_says_so(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    job = job_make(organization, status=JobStatus.SUCCEEDED)
    with organization_schema(organization):
        Job.objects.filter(pk=job.pk).update(
            content_deleted_at=timezone.now(),
            request={"model": "simulated-mini", "messages": None},
            result={"text": None, "model": "simulated-mini", "cache": "miss"},
        )
    client, _ = signed_in(client_for, organization, "viewer")
    html = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "The answer is not kept" in html and "The prompt is not kept" in html
    assert "job-answer" not in html


def test_an_unfinished_job_follows_its_progress_stream(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    organization = two_tenants[0]
    job = job_make(organization, status=JobStatus.RUNNING)
    client, _ = signed_in(client_for, organization, "viewer")
    html = client.get(f"/jobs/{job.pk}/").content.decode()
    assert f'data-job-events="/jobs/{job.pk}/events/"' in html and "portal/jobs.js" in html
    with organization_schema(organization):
        Job.objects.filter(pk=job.pk).update(
            status=JobStatus.SUCCEEDED, finished_at=timezone.now(), result={"text": "streamed", "model": "m"}
        )
    events = client.get(f"/jobs/{job.pk}/events/")
    assert events.status_code == 200 and events["Content-Type"] == "text/event-stream"
    stream = b"".join(events.streaming_content).decode()  # type: ignore[attr-defined]
    assert stream.startswith("event: status\ndata: ")
    assert '"finished": true' in stream and "streamed" in stream and '"status": "succeeded"' in stream


# -- submit and cancel ----------------------------------------------------------------------------


def test_a_developer_submits_a_prompt_and_it_is_queued_after_the_commit(
    two_tenants: tuple[Organization, Organization],
    client_for: ClientFor,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    organization = two_tenants[0]
    sent: list[Any] = []
    monkeypatch.setattr("apps.work.services.work_send", lambda **kwargs: sent.extend(kwargs["ids"]))
    client, user = signed_in(client_for, organization, "developer")
    form = client.get("/jobs/new/").content.decode()
    for name in ("agent", "model", "policy", "system", "prompt", "temperature", "top_p", "max_tokens", "max_cost_usd"):
        assert f'<label for="id_{name}">' in form and f'id="id_{name}"' in form
    # The models the organization can call are suggested (as /v1/models lists them).
    assert 'list="id_model_suggestions"' in form and '<option value="simulated-mini">' in form
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(
            "/jobs/new/",
            {
                "model": "simulated-mini",
                "system": "Be brief.",
                "prompt": "Say hi",
                "temperature": "0.5",
                "max_tokens": "30",
            },
        )
        assert sent == []  # nothing goes to the queue before the commit
    assert response.status_code == 302
    with organization_schema(organization):
        job = Job.objects.get()
        assert AuditEvent.objects.filter(action="job.submitted", actor_label=user.email).exists()
    assert response["Location"] == f"/jobs/{job.pk}/"
    assert job.request["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hi"},
    ]
    assert job.request["temperature"] == 0.5 and job.request["max_tokens"] == 30
    assert job.principal_label == user.email and job.status == JobStatus.QUEUED
    for callback in callbacks:
        callback()
    assert sent == [job.pk]
    assert "Job submitted" in client.get(response["Location"]).content.decode()


def test_a_job_submitted_to_an_agent_takes_its_defaults(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    agent = agent_make(organization, system_prompt="You are terse.", temperature=0.2)
    client, _ = signed_in(client_for, organization, "developer")
    form = client.get(f"/jobs/new/?agent={agent.pk}").content.decode()
    assert f'<option value="{agent.pk}" selected>' in form
    response = client.post("/jobs/new/", {"agent": str(agent.pk), "prompt": "Summarize this."})
    assert response.status_code == 302
    with organization_schema(organization):
        job = Job.objects.get()
    assert job.agent_id == agent.pk and job.request["model"] == "simulated-mini"
    assert job.request["messages"][0] == {"role": "system", "content": "You are terse."}
    assert job.request["temperature"] == 0.2


def test_the_same_form_sent_twice_submits_one_job(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization, "developer")
    form = client.get("/jobs/new/").content.decode()
    token = re.search(r'name="submission" value="([^"]+)"', form)
    assert token is not None
    posted = {"submission": token.group(1), "model": "simulated-mini", "prompt": "Only once"}
    first = client.post("/jobs/new/", posted)
    second = client.post("/jobs/new/", posted)
    with organization_schema(organization):
        job = Job.objects.get()
    assert first["Location"] == second["Location"] == f"/jobs/{job.pk}/"
    assert "already sent" in client.get(second["Location"]).content.decode()
    # A refused form may be corrected and sent again with its token.
    retry = client.get("/jobs/new/").content.decode()
    other = re.search(r'name="submission" value="([^"]+)"', retry)
    assert other is not None and other.group(1) != token.group(1)
    refused = client.post("/jobs/new/", {**posted, "submission": other.group(1), "model": "no-such-model"})
    assert refused.status_code == 400 and f'value="{other.group(1)}"' in refused.content.decode()
    accepted = client.post("/jobs/new/", {**posted, "submission": other.group(1)})
    assert accepted.status_code == 302 and accepted["Location"] != first["Location"]


@pytest.mark.parametrize(
    ("posted", "field", "message"),
    [
        ({"model": "simulated-mini"}, "prompt", "Write the prompt"),
        ({"prompt": "hi"}, "model", "give a `model`"),
        ({"prompt": "hi", "model": "no-such-model"}, "model", "does not exist"),
        ({"prompt": "hi", "model": "simulated-mini", "policy": "cheapest"}, "policy", "not both"),
        ({"prompt": "hi", "model": "simulated-mini", "temperature": "7"}, "temperature", "less than or equal to 2"),
        ({"prompt": "hi", "model": "simulated-mini", "max_tokens": "0"}, "max_tokens", "greater than or equal to 1"),
        ({"prompt": "hi", "model": "simulated-mini", "top_p": "abc"}, "top_p", "valid number"),
        ({"prompt": "hi", "agent": str(uuid.uuid4())}, "agent", "No such agent"),
        ({"prompt": "x" * 100_001, "model": "simulated-mini"}, "prompt", "At most 100,000 characters"),
    ],
)
def test_bad_input_answers_400_with_the_message_at_its_field_and_creates_nothing(
    two_tenants: tuple[Organization, Organization],
    client_for: ClientFor,
    posted: dict[str, str],
    field: str,
    message: str,
) -> None:
    organization = two_tenants[0]
    client, _ = signed_in(client_for, organization, "developer")
    response = client.post("/jobs/new/", {"prompt": "", **posted})
    assert response.status_code == 400
    html = response.content.decode()
    error = re.search(rf'<p class="field__error" id="id_{field}_error">([^<]*)</p>', html)
    assert error is not None and message in error.group(1), html[html.find("field__error") - 300 :][:800]
    # What was typed is kept.
    if posted.get("model"):
        assert f'value="{posted["model"]}"' in html
    with organization_schema(organization):
        assert not Job.objects.exists()


def test_cancel_ends_a_queued_job_and_a_finished_one_is_left_alone(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    organization = two_tenants[0]
    queued = job_make(organization)
    done = job_make(organization, status=JobStatus.SUCCEEDED)
    client, user = signed_in(client_for, organization, "developer")
    assert "Cancel job" in client.get(f"/jobs/{queued.pk}/").content.decode()
    response = client.post(f"/jobs/{queued.pk}/cancel/")
    assert response.status_code == 302 and response["Location"] == f"/jobs/{queued.pk}/"
    with organization_schema(organization):
        queued.refresh_from_db()
    assert queued.status == JobStatus.CANCELLED and user.email in queued.error_message
    page = client.get(f"/jobs/{queued.pk}/").content.decode()
    assert "Job cancelled" in page and "Cancel job" not in page
    client.post(f"/jobs/{done.pk}/cancel/")
    assert "had already ended" in client.get(f"/jobs/{done.pk}/").content.decode()
    with organization_schema(organization):
        done.refresh_from_db()
    assert done.status == JobStatus.SUCCEEDED
    assert client.get(f"/jobs/{queued.pk}/cancel/").status_code in (403, 405)


# -- organizations and roles ----------------------------------------------------------------------


def test_another_organizations_job_is_not_found(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    theirs = job_make(two_tenants[1])
    client, _ = signed_in(client_for, two_tenants[0], "owner")
    assert client.get(f"/jobs/{theirs.pk}/").status_code == 404
    assert client.get(f"/jobs/{theirs.pk}/events/").status_code == 404
    assert client.post(f"/jobs/{theirs.pk}/cancel/").status_code == 404
    assert job_ids(client.get("/jobs/").content.decode()) == []
    with organization_schema(two_tenants[1]):
        theirs.refresh_from_db()
    assert theirs.status == JobStatus.QUEUED
    # A member of B sees it on B's host, not on A's.
    other, _ = signed_in(client_for, two_tenants[1], "viewer")
    assert other.get(f"/jobs/{theirs.pk}/").status_code == 200
    outsider = client_for(f"{two_tenants[0].slug}.localhost")
    outsider.force_login(member_make(organization=two_tenants[1], role="owner"))
    assert outsider.get("/jobs/").status_code == 403  # not a member of A


@pytest.mark.parametrize("role", ROLES_WHO_SUBMIT + ROLES_WHO_ONLY_SEE)
def test_each_role_sees_jobs_and_only_writers_are_offered_submit_and_cancel(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor, role: str
) -> None:
    organization = two_tenants[0]
    job = job_make(organization)
    client, _ = signed_in(client_for, organization, role)
    listed = client.get("/jobs/").content.decode()
    detail = client.get(f"/jobs/{job.pk}/").content.decode()
    assert job_ids(listed) == [str(job.pk)]
    writer = role in ROLES_WHO_SUBMIT
    assert ("Submit a job" in listed) is writer and ("Cancel job" in detail) is writer
    assert client.get("/jobs/new/").status_code == (200 if writer else 403)
    if not writer:
        assert client.post("/jobs/new/", {"model": "simulated-mini", "prompt": "hi"}).status_code == 403
        assert client.post(f"/jobs/{job.pk}/cancel/").status_code == 403
        with organization_schema(organization):
            assert Job.objects.get().status == JobStatus.QUEUED


def test_signed_out_visitors_are_sent_to_sign_in(
    two_tenants: tuple[Organization, Organization], client_for: ClientFor
) -> None:
    response = client_for(f"{two_tenants[0].slug}.localhost").get("/jobs/")
    assert response.status_code == 302 and "login" in response["Location"]
