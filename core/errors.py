"""Errors a user can cause. Each carries a one-line message naming the bad value and what was expected.

Command-line entry points catch `SparringError`, print its message without a traceback and exit non-zero
(see `core.cli.main_guard`).
"""


class SparringError(Exception):
    """Base class for user-facing errors; the message is shown as-is, on one line."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class ConfigError(SparringError):
    """The YAML or a `--set` override is malformed, unknown, or of the wrong type or range."""


class ModelError(SparringError):
    """A model path or id cannot be used (missing, no chat template, wrong number of labels, ...)."""


class StoreError(SparringError):
    """The run store cannot be opened or written (locked, newer schema, read-only, ...)."""


class StageError(SparringError):
    """A stage cannot run on what the store holds (earlier round incomplete, zero pairs, ...)."""


class InputError(SparringError):
    """An input file (seed prompts, category file) is unreadable or malformed."""
