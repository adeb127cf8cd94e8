"""Training and evaluation of GRU4Rec from Python (what ``gru-jax train`` and ``evaluate`` run).

from gru_jax.config import preset
from gru_jax.data import load_dataset
from gru_jax.train import evaluate, load_run, train

dataset = load_dataset("srgnn", "../shared/data/retailrocket_cotrec", test_protocol="sessions")
result = train(preset("retailrocket"), dataset, "runs/rr")   # resumes runs/rr if it exists
config, spec, params, item_ids = load_run("runs/rr")
metrics = evaluate(spec, params, dataset.test, cutoffs=(10, 20))
"""

from gru_jax.train.evaluate import Evaluator, evaluate, top_k
from gru_jax.train.functional import ModelSpec
from gru_jax.train.loop import TrainingError, TrainResult, load_run, train

__all__ = [
    "Evaluator",
    "ModelSpec",
    "TrainResult",
    "TrainingError",
    "evaluate",
    "load_run",
    "top_k",
    "train",
]
