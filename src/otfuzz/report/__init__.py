"""The results document and the report writers built on it."""
