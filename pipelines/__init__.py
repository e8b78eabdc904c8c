"""Span log -> ClickHouse: decode, map, batch, write; schema migrations; rollups."""
