"""The config: the original's parameter names and defaults, overrides, files, presets."""

import pytest

from gru_jax.config import PRESETS, Config, preset

# The README table of hidasib/GRU4Rec (best hyperparameters), typed in from the reference:
# loss, elu, layers, batch, dropout embed/hidden, lr, momentum, n_sample, alpha, bpreg, logq.
PUBLISHED = {
    "rsc15": ("cross-entropy", 0, 100, 32, 0.1, 0.0, 0.1, 0.0, 2048, 0.75, 0.0, 1.0),
    "yoochoose": ("cross-entropy", 0, 480, 48, 0.0, 0.2, 0.07, 0.0, 2048, 0.2, 0.0, 1.0),
    "rees46": ("cross-entropy", 0, 512, 240, 0.45, 0.0, 0.065, 0.0, 2048, 0.5, 0.0, 1.0),
    "coveo": ("bpr-max", 1, 512, 144, 0.35, 0.0, 0.05, 0.4, 2048, 0.2, 1.85, 0.0),
    "retailrocket": ("bpr-max", 0.5, 224, 80, 0.5, 0.05, 0.05, 0.4, 2048, 0.4, 1.95, 0.0),
    "diginetica": ("bpr-max", 1, 512, 128, 0.5, 0.3, 0.05, 0.15, 2048, 0.3, 0.9, 0.0),
}
FIELDS = ("loss", "elu_param", "layers", "batch_size", "dropout_p_embed", "dropout_p_hidden",
          "learning_rate", "momentum", "n_sample", "sample_alpha", "bpreg", "logq")  # fmt: skip


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_presets_are_the_published_best_parameters(name):
    config = preset(name)
    for field, want in zip(FIELDS, PUBLISHED[name], strict=True):
        got = getattr(config, field)
        assert got == (want,) if field == "layers" else got == want, (name, field, got)
    assert config.constrained_embedding  # all best results use the shared embedding
    assert "source" in PRESETS[name]


def test_defaults_are_the_official_pytorch_port_defaults():
    c = Config()
    assert (c.layers, c.loss, c.batch_size, c.learning_rate, c.momentum) == (
        (100,),
        "cross-entropy",
        64,
        0.05,
        0.0,
    )
    assert (c.sample_alpha, c.n_sample, c.embedding, c.constrained_embedding) == (
        0.5,
        2048,
        0,
        True,
    )
    assert (c.n_epochs, c.bpreg, c.elu_param, c.logq) == (10, 1.0, 0.5, 0.0)


def test_overrides_parse_to_the_field_types():
    c = Config().with_overrides(
        [
            "layers=100/50",
            "loss=bpr-max",
            "constrained_embedding=false",
            "learning_rate=0.2",
            "n_epochs=3",
            "bptt=true",
        ]  # fmt: skip
    )
    assert c.layers == (100, 50) and c.loss == "bpr-max" and not c.constrained_embedding
    assert c.learning_rate == 0.2 and c.n_epochs == 3 and c.bptt is True
    assert Config().with_overrides(["embedding=layersize", "layers=64"]).embedding == 64


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["no_such=1"], "no_such"),
        (["layers"], "key=value"),
        (["n_epochs=ten"], "n_epochs"),
        (["momentum=1.5"], "momentum"),
        (["dropout_p_hidden=1.0"], "dropout_p_hidden"),
        (["constrained_embedding=maybe"], "true/false"),
        (["tie_mode=optimistic"], "tie_mode"),
        (["n_sample=0", "batch_size=1"], r"n_sample=0 needs batch_size >= 2.*batch_size=1"),
    ],
)
def test_bad_overrides_name_the_key(overrides, message):
    with pytest.raises(ValueError, match=message):
        Config().with_overrides(overrides)


def test_config_file_starts_from_its_preset(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('preset = "retailrocket"\nn_epochs = 5\nlayers = [100]\n')

    c = Config.from_file(path)

    assert c.n_epochs == 5 and c.layers == (100,)
    assert c.bpreg == 1.95 and c.batch_size == 80  # from the preset


@pytest.mark.parametrize(
    "text, message",
    [("n_epochs = \n", "not a valid toml"), ("nonsense = 1\n", "nonsense"), ("[1, 2]", "mapping")],
)
def test_bad_config_files_name_the_file(tmp_path, text, message):
    path = tmp_path / ("bad.json" if text.startswith("[") else "bad.toml")
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        Config.from_file(path)
    assert str(path) in str(info.value)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        Config.from_file(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    "text, message",
    [
        ("bptt = 0.5\n", "bptt takes true/false"),
        ("bptt = 2\n", "bptt takes true/false"),
        ("n_epochs = true\n", "n_epochs takes an integer"),
        ("n_epochs = 1.7\n", "n_epochs takes an integer"),
    ],
)
def test_config_files_keep_booleans_and_integers_apart(tmp_path, text, message):
    path = tmp_path / "run.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        Config.from_file(path)


def test_the_constructor_coerces_and_checks_like_overrides():
    """Config(...) in Python gets the types a saved config.json reads back as, so a run made
    from it compares equal on resume; values the types cannot hold are refused by name."""
    import json

    import numpy as np

    config = Config(layers=[8, np.int64(4)], batch_size=np.int64(16), learning_rate=1)
    assert config.layers == (8, 4) and type(config.batch_size) is int
    assert isinstance(config.learning_rate, float)
    assert Config(**json.loads(json.dumps(config.to_dict()))) == config
    assert Config(layers=[32], embedding="layersize").embedding == 32
    assert Config(layers=np.int64(8), bptt=np.True_).layers == (8,)
    for kwargs, message in [
        ({"layers": (8.5,)}, "layers takes integers"),
        ({"batch_size": 2.5}, "batch_size takes an integer"),
        ({"loss": 5}, "loss takes a string"),
        ({"bptt": 2}, "bptt takes true/false"),
        ({"learning_rate": True}, "learning_rate takes a finite number, got True"),
        ({"bpreg": float("nan")}, "bpreg takes a finite number"),
        ({"logq": "inf"}, "logq takes a finite number"),
    ]:
        with pytest.raises(ValueError, match=message):
            Config(**kwargs)
