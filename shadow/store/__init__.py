"""The SQLite store: the file (`database`) and its schema migrations (`migrations`), the only sqlite-utils imports,
rows and inserts (`rows`), reads (`figures`, `traffic_reads`, `exchange_reads`, `flip_reads` on `read_sql`'s helpers,
returning `types`) and the batched writer thread (`writer`).
"""
