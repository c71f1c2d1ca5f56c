"""Exception tree and exit codes shared by every hpcml command.

The command-line entry points map these to exit statuses:

========================  ======  ===========================================
exception                 status  meaning
========================  ======  ===========================================
(none)                    0       done
:class:`UsageError`       2       bad usage, config or data (one error line)
(none)                    3       stopped early (signal, time limit); resumable
                                  (``EXIT_INCOMPLETE``, returned by the entry point)
anything else             1       a bug or an unexpected failure
========================  ======  ===========================================
"""

from __future__ import annotations

import pickle

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3


class HpcmlError(Exception):
    """Base class of every error hpcml raises on purpose."""

    exit_code = EXIT_FAILURE


class UsageError(HpcmlError):
    """Bad command line, config or data: reported as one line, exit status 2."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A problem with a config file; the message names the file and key."""


class DataError(UsageError):
    """A problem with the input data; the message names the file and dataset."""


class RunError(HpcmlError):
    """The run failed for a reason that one line explains (exit status 1); results so far are kept."""


class SerializationError(RunError, pickle.PicklingError):
    """An object could not be sent between ranks: neither pickle nor cloudpickle could serialise it.

    Also raised when a rank cannot unpickle what another rank sent.  Every rank
    of the collective raises it (never a hang).
    """


class Incomplete(HpcmlError):
    """The run stopped before every unit finished (a signal or the time limit): exit 3."""

    exit_code = EXIT_INCOMPLETE


class RemoteError(HpcmlError):
    """An unexpected exception raised on another rank, re-raised where the user is.

    Parameters
    ----------
    rank : int
        Rank that raised.
    host : str
        Host name of that rank.
    message : str
        One-line summary (``Type: message``).
    traceback : str
        The formatted remote traceback.
    """

    def __init__(self, rank: int, host: str, message: str, traceback: str = "") -> None:
        super().__init__(f"rank {rank} on {host}: {message}")
        self.rank = rank
        self.host = host
        self.message = message
        self.traceback = traceback

    def __reduce__(self) -> tuple[object, ...]:
        # Exception's default reduction calls ``cls(*self.args)`` with the one
        # formatted message; rebuild from the constructor's arguments instead.
        return (type(self), (self.rank, self.host, self.message, self.traceback), self.__dict__)
