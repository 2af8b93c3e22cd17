"""Exceptions a user can act on. Only ``cli.py`` catches them, to print one line and exit."""


class RobenchError(Exception):
    """Base class: the message is complete and meant for the user as it stands."""


class DataNotFoundError(RobenchError):
    """A dataset is not on disk where robench looked and cannot be downloaded."""


class CheckpointError(RobenchError):
    """A checkpoint is missing, corrupt, foreign, or does not match what was asked for."""


class ResultError(RobenchError):
    """A result file is missing, corrupt, or was made by a different configuration."""


class ConfigError(RobenchError):
    """A configuration file or option is malformed."""


class WriteError(RobenchError):
    """An output cannot be written: a read-only or full disk, or a folder where a file should go."""


class ReadError(RobenchError):
    """A file robench was asked to read is not a regular file (a FIFO, a device), or is too large
    or too deeply nested to be one of robench's. ``reason`` is the message without the path."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path} {reason}")
        self.reason = reason
