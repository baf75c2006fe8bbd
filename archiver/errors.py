class ArchiverError(Exception):
    """A problem with the owner's data, models or settings; the message says what to do."""
