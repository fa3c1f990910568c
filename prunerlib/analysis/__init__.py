"""Paper tables, figures and a report from prunerlib result rows (Parquet only): `prunerlib report`.

Split by job: `results` reads the files; `rows`, `columns`, `labels` select, key and name
rows; `stats` and `coverage` are the statistics; `pairing` pairs methods with their controls;
`published` holds the paper's numbers; `tables` (Tables 1–3) and `comparison` (the honest
comparison and every setting) build tables, `render` writes them; `figures` draws;
`provenance` and `report` write report.md; `command` is the command line.
"""
