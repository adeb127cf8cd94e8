"""Session data: readers, GRU4Rec preprocessing, session-parallel batches, negative sampling.

Typical use::

    from gru_jax import data

    ds = data.load_dataset("gru4rec", "events.tsv", config=data.PreprocessConfig(test_days=7))
    ds.save("prep/")                          # ds = data.Dataset.load("prep/") later
    it = data.SessionParallelIterator(ds.train, batch_size=64)
    sampler = data.NegativeSampler(ds.item_supports(), alpha=0.5, n_sample=2048)
    for batch in it.epoch(0):                 # Batch of (T, B) arrays
        negatives = sampler.take(it.steps)    # (T, n_sample)

Without user data, `default_dataset()` gives a small synthetic shop log.
"""

from gru_jax.data.dataset import DataError, Dataset, SessionLog
from gru_jax.data.iterator import Batch, SessionParallelIterator
from gru_jax.data.preprocess import (
    DEFAULT_EVENT_TYPES,
    PreprocessConfig,
    dataset_from_files,
    dataset_from_pairs,
    load_dataset,
    preprocess,
)
from gru_jax.data.readers import FORMATS, read_events, read_srgnn_split
from gru_jax.data.sampler import NegativeSampler
from gru_jax.data.synthetic import default_dataset, generate_sessions

__all__ = [
    "DEFAULT_EVENT_TYPES",
    "FORMATS",
    "Batch",
    "DataError",
    "Dataset",
    "NegativeSampler",
    "PreprocessConfig",
    "SessionLog",
    "SessionParallelIterator",
    "dataset_from_files",
    "dataset_from_pairs",
    "default_dataset",
    "generate_sessions",
    "load_dataset",
    "preprocess",
    "read_events",
    "read_srgnn_split",
]
