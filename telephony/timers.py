"""RFC 3261 transaction timer values for an unreliable transport (UDP), in seconds.

This module owns the numbers only: the base values of RFC 3261 §17.1.1.1 / Table 4 and
the timers derived from them. Which transaction arms which timer, and when, is the
business of ``calls.py`` (INVITE server), ``registration.py`` (REGISTER client),
``endpoint.py`` (non-INVITE server) and ``dialer.py`` (the test caller).
"""

from __future__ import annotations

__all__ = ["T1", "T2", "T4", "TIMER_F", "TIMER_H", "TIMER_I", "TIMER_J"]

# RFC 3261 §17.1.1.1: "T1 is an estimate of the round-trip time (RTT), and it defaults to
# 500 ms."
T1 = 0.5
# RFC 3261 §17.1.2.2: the cap of non-INVITE (and §17.2.1 INVITE final response)
# retransmission intervals, 4 s.
T2 = 4.0
# RFC 3261 §17.1.2.2 / Table 4: "maximum duration a message will remain in the network",
# 5 s.
T4 = 5.0

# RFC 3261 §17.1.2.2: a non-INVITE client transaction gives up after 64*T1 (Timer F).
TIMER_F = 64 * T1
# RFC 3261 §17.2.1: an INVITE server waits 64*T1 for the ACK of its final response.
TIMER_H = 64 * T1
# RFC 3261 §17.2.1: after the ACK, the Confirmed state absorbs retransmissions for T4.
TIMER_I = T4
# RFC 3261 §17.2.2: a non-INVITE server keeps its final response for 64*T1.
TIMER_J = 64 * T1
