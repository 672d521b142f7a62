"""The composition of callpop: the CLI, the settings, logging, and the wiring.

``callpop.service.running(settings)`` builds the parts (database, numbering plan,
lookup, hub, call service, SIP transport) and ``build_app`` puts the web over them;
``callpop.calls.CallService`` carries a ``telephony`` event through ``lookup`` to the
board. The four parts (``telephony``, ``lookup``, ``popup_ui``, ``db``) know nothing
of this package.
"""
