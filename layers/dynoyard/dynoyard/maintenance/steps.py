"""The cleanup job's steps, in the order they run. Each engineer adds theirs with one line."""

from __future__ import annotations

from dynoyard.maintenance.alerts_step import alerts_step
from dynoyard.maintenance.job import Step
from dynoyard.maintenance.retention import retention_step
from dynoyard.maintenance.rollup import rollup_step
from dynoyard.maintenance.stranded_holds import stranded_holds_step
from dynoyard.maintenance.welcome import welcome_step

STEPS: list[tuple[str, Step]] = [
    ("rollup", rollup_step),
    ("stranded_holds", stranded_holds_step),
    ("retention", retention_step),
    ("alerts", alerts_step),
    ("welcome", welcome_step),
]
