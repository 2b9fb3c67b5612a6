"""The scheduled cleanup function's job (functions/cleanup/, `dynoyard cleanup run`): ordered
steps, each idempotent and resumable, run within a time budget (job.py, steps.py)."""
