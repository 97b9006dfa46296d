"""The data room: the DuckDB run store and its SQL, selection, lineage, checks, the report, Hub publishing."""
