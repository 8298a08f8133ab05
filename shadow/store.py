"""The SQLite store of exchanges and differences; the only sqlite-utils import."""
