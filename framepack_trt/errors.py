"""Expected failures. Each carries the exit code the CLI uses: 2 for misuse, 1 for failure.

Messages name the bad value and say what would be valid. Bugs are not wrapped here: they keep
their tracebacks.
"""

from __future__ import annotations


class FramepackTrtError(Exception):
    """Base of every expected failure."""

    exit_code = 1


class UsageError(FramepackTrtError):
    """The user asked for something that cannot be (bad option, bad profile, unknown name)."""

    exit_code = 2


class ProfileError(UsageError):
    """A profile file is missing, unreadable or invalid. One message lists every problem."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        self.problems = problems
        if len(problems) == 1:
            text = f"{path}: {problems[0]}"
        else:
            text = f"{path}: {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems)
        super().__init__(text)


class WeightsNotFoundError(FramepackTrtError):
    """A component's weights are not on disk (local path or the local Hugging Face cache)."""


class CacheError(FramepackTrtError):
    """The cache directory cannot be used (not writable, not a directory, ...)."""


class BackendUnavailableError(FramepackTrtError):
    """A backend is not installed or cannot run on this machine."""


class BuildError(FramepackTrtError):
    """A component could not be exported, compiled or verified."""


class ShapeError(UsageError):
    """A call's shapes fall outside every engine's range."""
