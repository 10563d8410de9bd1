"""merge-study: model-merging studies of LLMs, reproducible from a sweep file."""

__version__ = "0.1.0"
RESULT_SCHEMA_VERSION = 1
