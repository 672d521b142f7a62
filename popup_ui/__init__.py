"""The web side and composition root of callpop.

``popup_ui.app.create_app(settings)`` reads the settings, builds the SIP
transport, the lookup and the hub, and wires telephony events through lookup to
the staff browsers. It knows people and screens, and nothing of SIP wire formats.
"""
