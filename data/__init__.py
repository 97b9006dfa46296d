"""The data room: config, the DuckDB run store, tiny models, selection, export. Imports no other room."""
