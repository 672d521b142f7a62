"""Numbers and records: normalise a caller's number and build the caller card.

This package knows phone numbers and the database records; it knows nothing of
SIP or browsers.
"""
