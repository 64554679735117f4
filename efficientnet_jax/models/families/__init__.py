"""The families' stage tables: one module of plain data each, registered in `registry.py`."""
