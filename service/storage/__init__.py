"""Storage: Peewee models, migrations and the few hand-written statements on hot paths."""
