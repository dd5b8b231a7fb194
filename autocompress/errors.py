"""Errors the user can fix. The CLI turns them into one line on stderr and exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input: a file, field or value the user gave is wrong.

    The message is one line that names the place (file, field, flag or study) and what would be right.
    Raising it must leave the store unchanged, so it is raised before any write.
    """

    def __init__(self, where: str, message: str) -> None:
        self.where = where
        self.message = message
        super().__init__(f"{where}: {message}")


class SearchStopped(RuntimeError):
    """A search cannot go on because of a fault outside its trials (the artefact disk, the database).

    The message is one line that says what failed and what to do; the CLI prints it and exits 1. Trials that
    were running are queued for the next ``autocompress resume``; finished ones are stored.
    """
