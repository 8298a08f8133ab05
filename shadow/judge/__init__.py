"""Judging a pair: normalising both responses and comparing them (`compare`, the only deepdiff
import; `jsondiff`, `textdiff`, `textlines`, `normalize`, `jsonpath`, `origins`), and telling real differences
from noise (`noise`). Pure; it never imports the store.
"""
