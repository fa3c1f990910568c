"""Paper tables, figures and a report from prunerlib result rows (Parquet only)."""
