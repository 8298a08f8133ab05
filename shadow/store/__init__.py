"""The SQLite store: the file, its schema and migrations (`database`, the only sqlite-utils import),
rows and inserts (`rows`), reads (`figures`, `traffic_reads`, `exchange_reads`, `flip_reads` on `read_sql`'s helpers,
returning `types`) and the batched writer thread (`writer`).
"""
