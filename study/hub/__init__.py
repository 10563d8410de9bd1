"""The Hugging Face Hub side of a sweep: checking hub models before any download, and fetching them.

``validate`` and ``fetch`` check every hub model a sweep names on the hub itself, reading only metadata (the
repo's file list and model card, ``config.json``, the safetensors headers by HTTP range requests): existence,
access (gated, private), config and every tensor's shape and dtype against the base, vocabulary sizes, and
lineage (``base_model`` in the model cards). ``fetch`` then downloads the files merges and evaluation need at
pinned commits, recorded in a lock file. ``run`` never downloads; it reads the local Hugging Face cache.

Modules: ``client`` (endpoint, offline mode, errors in one line), ``remote`` (one repo's metadata),
``lineage`` (model-card ancestry), ``lock`` (the lock file), ``checks`` (a sweep's checks, online or from the
cache), ``fetch`` (what to download, the disk check, the download).
"""
