"""Errors that the command line turns into one clear line instead of a traceback."""


class GatewatchError(Exception):
    """A problem the user can fix; the message says what is wrong and how to fix it."""


class ConfigError(GatewatchError):
    """A setting, DSN or config file that cannot be used."""


class SpanLogUnavailable(GatewatchError):
    """The span log (Kafka or embedded) could not durably accept or deliver messages."""


class SpanLogFull(SpanLogUnavailable):
    """The embedded span log is at capacity; the caller should retry later."""
