"""merge-study: model-merging studies of LLMs, reproducible from a sweep file."""

__version__ = "0.1.0"
RESULT_SCHEMA_VERSION = 2
"""Version of the record and cell-key format: 2 keys cells on schema-resolved parameters, method and
evaluation-bridge versions and content digests of checkpoints. A store of another version is refused, never mixed."""
