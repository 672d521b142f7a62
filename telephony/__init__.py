"""SIP side of callpop: a sans-I/O SIP core and a thin asyncio UDP transport.

This package knows SIP and nothing of customers, databases or browsers. It turns
datagrams from a PBX into the events of :mod:`telephony.events`.
"""
