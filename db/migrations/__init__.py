"""Alembic migrations of callpop's schema, shipped inside the package.

``db.engine.migrate`` runs them; a package (not a bare directory) so that they are
installed with callpop.
"""
