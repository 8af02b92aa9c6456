"""The single exception type that every bad input to the data package raises."""


class DataError(ValueError):
    """A one-line message that names the problem and how to fix it."""
