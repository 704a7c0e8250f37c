"""Heartbeats of the workflow steps this worker process runs (and of their runs). When the process
dies the touching stops, the reaper sends the steps again, and the next worker takes them over."""

from __future__ import annotations

from django.utils import timezone

from apps.work.heartbeat import Heartbeats


def _touch_steps(ids: list[int]) -> int:
    from apps.workflows.models import StepRun, StepStatus, WorkflowRun

    now = timezone.now()
    touched = StepRun.objects.filter(pk__in=ids, status=StepStatus.RUNNING).update(heartbeat_at=now)
    WorkflowRun.objects.filter(steps__pk__in=ids).update(heartbeat_at=now)
    return touched


heartbeats: Heartbeats[int] = Heartbeats(touch=_touch_steps, name="workflow-heartbeats")
