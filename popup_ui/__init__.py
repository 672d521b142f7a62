"""The web side of callpop: the FastAPI app, its routes, sessions and static files.

``popup_ui.app.create_app(config, start)`` serves the board (the hub), the login,
the REST API and the browser UI over parts built elsewhere (the ``callpop``
package). It knows people and screens, and nothing of SIP.
"""
