"""The error a training run stops with (its own exit status in `gru-jax train`)."""


class TrainingError(RuntimeError):
    """Training stopped: a non-finite loss, a run directory or checkpoint that does not fit the
    run, or processes of one run that do not run the same training."""
