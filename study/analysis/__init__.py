"""Analysis: tidy tables from the store, the study's measures, figures, length tables and the report.

Data flows one way: store → ``tables`` (tidy scores) → ``measures`` / ``lengths`` → ``curves`` → ``report``.
``report.write_report`` is the entry point the CLI calls.
"""
