import pytest

from diffbench.core.errors import UnknownNameError, UserError
from diffbench.core.registry import Registry


def make() -> Registry[int]:
    r: Registry[int] = Registry("preset")
    for i, n in enumerate(["DiT-XL/2", "DiT-XL/4", "DiT-L/2", "U-ViT-H/2"]):
        r.add(n, i)
    return r


def test_get_and_contains():
    r = make()
    assert r.get("DiT-L/2") == 2
    assert "U-ViT-H/2" in r and "nope" not in r
    assert r.names() == ["DiT-XL/2", "DiT-XL/4", "DiT-L/2", "U-ViT-H/2"]


def test_unknown_name_suggests_close_matches_and_lists_available():
    with pytest.raises(UnknownNameError, match=r"unknown preset 'DiT-XL2'; did you mean 'DiT-XL/2'") as e:
        make().get("DiT-XL2")
    assert "available: DiT-XL/2, DiT-XL/4, DiT-L/2, U-ViT-H/2" in str(e.value)
    assert isinstance(e.value, UserError)


def test_did_you_mean_is_case_insensitive():
    with pytest.raises(UnknownNameError, match="did you mean 'U-ViT-H/2'"):
        make().get("u-vit-h/2")


def test_no_suggestion_for_far_names():
    with pytest.raises(UnknownNameError) as e:
        make().get("zzzzzz")
    assert "did you mean" not in str(e.value)


def test_duplicate_registration_is_a_bug():
    r = make()
    with pytest.raises(ValueError, match="registered twice"):
        r.add("DiT-L/2", 9)


def test_decorator_registers():
    r: Registry[object] = Registry("thing")

    @r.register("f")
    def f() -> None:
        pass

    assert r.get("f") is f
