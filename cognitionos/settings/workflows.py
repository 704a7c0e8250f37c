"""Workflows: bounds on what one step of a run may build."""

from .env import env_int

# The most a step may render (its prompt, query, URL, body... together) and the most a transform's
# or a map's output may be, in bytes of text; past it the step fails with `output_too_large`.
WORKFLOW_STEP_OUTPUT_MAX_BYTES = env_int("WORKFLOW_STEP_OUTPUT_MAX_BYTES", 1024 * 1024)
