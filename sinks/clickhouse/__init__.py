"""The ClickHouse sink and the schema migrations that create its tables."""
