"""Stand-in for bondpy (apt only, not on PyPI): see bondpy.py beside it."""
