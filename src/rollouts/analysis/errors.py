"""Errors raised by the analysis engine's pure steps, grouped by when they happen.

Why separate classes: the Rollout controller creates runs (`AnalysisBuildError` means "the
rollout's analysis cannot start: fix the templates or args"), while the AnalysisRun runner
turns `AnalysisArgError` / `AnalysisSpecError` into a run in phase Error with a message.
Every message names the offending template, metric or arg and says how to fix it.
"""

from __future__ import annotations

__all__ = ["AnalysisArgError", "AnalysisBuildError", "AnalysisError", "AnalysisSpecError"]


class AnalysisError(Exception):
    """Base class of every error raised by `rollouts.analysis` pure code."""


class AnalysisBuildError(AnalysisError):
    """An AnalysisRun cannot be built from the referenced templates and args."""


class AnalysisArgError(AnalysisError):
    """`{{args.*}}` substitution or arg resolution (secrets) failed for a run."""


class AnalysisSpecError(AnalysisError):
    """A run's metrics, dryRun or measurementRetention rules are invalid (b.3)."""
