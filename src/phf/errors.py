"""The kinds of error a user can fix: a bad config, bad input data, a failed write.

The command line prints each as one line (no traceback) and exits with status 2.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """Configuration problems, each with the key (and file) it comes from; all are
    reported at once, one line each, so a user fixes them in one go."""

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            super().__init__(self.problems[0])
        else:
            super().__init__(f"{len(self.problems)} config problems:\n  " + "\n  ".join(self.problems))


class DataError(ValueError):
    """Bad input, with the file, line or record and the field it concerns.

    `reason` is a short, stable category ("malformed JSON", "not UTF-8", ...) under
    which a skipped record is counted; the message has the details.
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


class SaveFailed(OSError):
    """A checkpoint or the final model could not be written (disk full, ...); the message
    names the last complete checkpoint and how to resume from it."""
