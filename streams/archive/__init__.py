"""The archive: every decision and deal in a database (SQLite or PostgreSQL), exported to CSV and Parquet."""
