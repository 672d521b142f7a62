from tests.fixtures_db import database, migrated_postgres

__all__ = ["database", "migrated_postgres"]
