"""B2B review screens and school pages inside the Airflow UI (issue 12; docs/screens.md)."""
