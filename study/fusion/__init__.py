"""Knowledge fusion (issue #22): a subset's checkpoints as teachers, the base (or a named model) trained on their
fused next-token distributions over a corpus, then scored like any cell.

corpus.py (the texts, never an evaluated document), distributions.py (teachers' top-K, cached on disk),
align.py (FuseLLM's vocabulary and sequence alignment), schema.py and registry.py (``@fusion_method``, the
``study.fusion_methods`` entry points), fuse.py (min_ce, avg, infifusion_topk), train.py (the target's
training), cost.py (tokens and seconds in the record), cell.py (one cell, start to end).
"""
