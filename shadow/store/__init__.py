"""The SQLite store: the file, its schema and migrations (`database`, the only sqlite-utils import),
rows and inserts (`rows`), reads (`queries`, `types`) and the batched writer thread (`writer`).
"""
