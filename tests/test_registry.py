"""Tests for gru_jax.registry."""

import pytest

from gru_jax.registry import Registry, UnknownNameError


def test_register_as_decorator_and_call():
    reg = Registry("thing")

    @reg.register("a")
    def make_a():
        return "A"

    def make_b():
        return "B"

    returned = reg.register("b", make_b)

    assert make_a() == "A"  # the decorator hands the function back unchanged
    assert returned is make_b
    assert reg.get("a") is make_a and reg.get("b") is make_b
    assert reg.names() == ("a", "b")
    assert "a" in reg and "c" not in reg and len(reg) == 2
    assert list(reg) == ["a", "b"]


def test_unknown_name_lists_known_names():
    reg = Registry("optimizer")
    reg.register("sgd", object())
    reg.register("adam", object())

    with pytest.raises(KeyError) as info:
        reg.get("adagrad")
    message = str(info.value)
    assert "optimizer" in message and "'adagrad'" in message
    assert "'adam'" in message and "'sgd'" in message
    with pytest.raises(ValueError):  # the same error is also a ValueError
        reg.get("nope")
    assert isinstance(info.value, UnknownNameError)


def test_reregister_needs_overwrite():
    reg = Registry("loss")
    first, second = object(), object()
    reg.register("x", first)

    with pytest.raises(ValueError, match="already registered"):
        reg.register("x", second)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("x")(second)
    assert reg.get("x") is first

    reg.register("x", second, overwrite=True)
    assert reg.get("x") is second


def test_empty_registry_message_and_bad_name():
    reg = Registry("cell")
    with pytest.raises(KeyError, match="known: none"):
        reg.get("gru")
    with pytest.raises(ValueError):
        reg.register("", object())
