"""The end-to-end tier uses the peers' Kamailio (registrar.cfg on a free loopback port)."""

from tests.peers.conftest import kamailio

__all__ = ["kamailio"]
