"""What a fusion cell cost, stored in its record: the compute a comparison with merges must state.

A merge costs one pass over the weights; a fusion cell costs the teachers' forward passes over the corpus and
the target's training. Teacher passes are counted whether this cell computed them or read them from the cache
(``teachers_cached`` says how many it read), so a cell's cost does not depend on which cell ran first.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class FusionCost(BaseModel):
    """Tokens and seconds of one fusion cell (``Record.fusion``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    teachers: int
    corpus_sequences: int
    corpus_digest: str
    teacher_tokens: int
    """Tokens the k teachers ran over (the sum over teachers of their corpus tokenisations)."""
    teachers_cached: int
    teacher_seconds: float
    """Seconds this cell spent in teacher forward passes (0 when every teacher was cached)."""
    align_fuse_seconds: float
    train_steps: int
    train_tokens: int
    """Predicted tokens the target trained on, steps x batch without padding."""
    train_seconds: float
    resumed_from_step: int = 0
    device: str = "cpu"
    cross_tokenizer: bool = False
    """At least one teacher's vocabulary differed from the target's and was aligned (``study.fusion.align``)."""
