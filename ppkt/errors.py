"""Exception types. Every error caused by user input names the file or key and the problem."""


class PPKTError(Exception):
    """Base class of all errors raised by ppkt for bad input."""


class DataError(PPKTError):
    """A data file is missing, unreadable or inconsistent (the message names the file)."""


class ConfigError(PPKTError):
    """A configuration key or value is invalid (the message names the key and the valid choices)."""


class WeightsError(PPKTError):
    """A weights or checkpoint file is missing, corrupt or does not match the model."""
