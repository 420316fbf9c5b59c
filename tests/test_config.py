"""Configs: every bad key, type or range is an error that names the key."""

import pytest
import yaml

from unrolled.config import ConfigError, apply_overrides, from_dict
from unrolled.experiments import ExperimentConfig, dump_config, load_config
from unrolled.experiments.regression import ClassicalMethod, LearnedMethod

BASE = {
    "name": "t",
    "task": {"d": 5, "n": 20},
    "methods": [{"name": "lt", "kind": "linear_transformer"}, {"name": "cg", "kind": "cg"}],
}


def build(**changes):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    for key, value in changes.items():
        data = apply_overrides(data, [f"{key}={yaml.safe_dump(value, default_flow_style=True).strip()}"])
    return from_dict(ExperimentConfig, data)


def test_base_config_builds_with_defaults():
    cfg = build()
    assert cfg.train.protocol == "online" and cfg.eval.in_sample is False
    assert isinstance(cfg.methods[0], LearnedMethod) and isinstance(cfg.methods[1], ClassicalMethod)
    assert cfg.seeds == (0, 1, 2, 3, 4) and cfg.depths == (1, 2, 3, 4)
    # the resolved config round-trips through YAML
    again = from_dict(ExperimentConfig, yaml.safe_load(dump_config(cfg)))
    assert again == cfg


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("task.d", 0, r"task\.d: must be >= 1, got 0"),
        ("task.n", 0, r"task\.n: must be >= 1"),
        ("task.variance", -1.0, r"task\.variance: must be > 0"),
        ("task.label_noise", -0.1, r"task\.label_noise: must be >= 0"),
        ("task.d", "five", r"task\.d: expected an integer, got 'five'"),
        ("task.d", 2.5, r"task\.d: expected an integer"),
        ("task.d", True, r"task\.d: expected an integer"),
        ("task.covariance", "diagonal", r"task\.covariance: must be one of"),
        ("task.scales", [1.0, 2.0], r"task\.scales: needs d = 5 entries"),
        ("depths", [], r"depths: needs at least one depth \(no layers\)"),
        ("depths", [0, 1], r"depths\[0\]: must be >= 1"),
        ("seeds", [], r"seeds: needs at least one seed"),
        ("train.steps", 0, r"train\.steps: must be >= 1"),
        ("train.lr", 0, r"train\.lr: must be > 0"),
        ("train.lr", "fast", r"train\.lr: expected a number, got 'fast'"),
        ("train.protocol", "batch", r"train\.protocol: must be one of"),
        ("train.clip", -1, r"train\.clip: must be > 0"),
        ("train.betas", [0.9], r"train\.betas: needs 2 entries"),
        ("eval.in_sample", True, r"eval\.in_sample: in-sample evaluation needs train\.protocol: fixed_batch"),
        ("eval.batch_size", 0, r"eval\.batch_size: must be >= 1"),
        ("methods.lt.heads", 0, r"methods\[0\]\.heads: must be >= 1"),
        ("methods.lt.A", "diag", r"methods\[0\]\.A: must be one of"),
        ("methods.lt.kind", "memformer", r"methods\[0\]\.kind: unknown kind 'memformer'"),
        ("methods.cg.lr", 0.1, r"methods\[1\]\.lr: conjugate gradient has no step size"),
        ("methods.cg.kind", "nesterov", r"methods\[1\]\.lr: required for nesterov unless tune: true"),
        ("methods", [], r"methods: needs at least one method"),
    ],
)
def test_bad_values_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        build(**{key: value})


def test_unknown_keys_are_named_with_a_suggestion():
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["task"]["dd"] = 3
    with pytest.raises(ConfigError, match=r"task\.dd: unknown key \(did you mean 'd'\?\)"):
        from_dict(ExperimentConfig, data)
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["trian"] = {}
    with pytest.raises(ConfigError, match=r"trian: unknown key \(did you mean 'train'\?\)"):
        from_dict(ExperimentConfig, data)
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["methods"][0]["lr"] = 0.1
    with pytest.raises(ConfigError, match=r"methods\[0\]\.lr: unknown key"):
        from_dict(ExperimentConfig, data)


def test_missing_required_and_duplicate_names():
    with pytest.raises(ConfigError, match="name: missing"):
        from_dict(ExperimentConfig, {"task": {}, "methods": BASE["methods"]})
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["methods"][1]["name"] = "lt"
    with pytest.raises(ConfigError, match="duplicate method names: lt"):
        from_dict(ExperimentConfig, data)
    with pytest.raises(ConfigError, match="kind: missing"):
        build(methods=[{"name": "x"}])


def test_published_numbers_must_match_methods_and_depths():
    with pytest.raises(ConfigError, match=r"published\.nope: no method named 'nope'"):
        build(published={"nope": [1, 2, 3, 4]})
    with pytest.raises(ConfigError, match=r"published\.lt: needs one value per depth \(4\)"):
        build(published={"lt": [1, 2]})


def test_overrides_by_index_and_name_and_errors():
    data = apply_overrides(
        BASE, ["methods.0.heads=3", "methods.cg.label=CG", "train.lr=1e-3", "seeds=[0, 1]"]
    )
    cfg = from_dict(ExperimentConfig, data)
    assert cfg.methods[0].heads == 3 and cfg.methods[1].label == "CG"
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.seeds == (0, 1)
    assert BASE["methods"][0].get("heads") is None  # the input is not modified
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides(BASE, ["train.lr"])
    with pytest.raises(ConfigError, match="no list item named 'gd'"):
        apply_overrides(BASE, ["methods.gd.lr=1"])
    with pytest.raises(ConfigError, match="index 5 out of range"):
        apply_overrides(BASE, ["methods.5.lr=1"])


def test_config_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_config(listy)


# -- the config machinery itself, on a small model of its own ---------------------------------------------


def _toy_models():
    from typing import Annotated, ClassVar, Literal, Union

    from pydantic import Field, model_validator

    from unrolled.config import ConfigModel, Float, Int, check

    class Leaf(ConfigModel):
        kind: Literal["leaf"]
        rate: Annotated[Float, Field(gt=0, le=1)] = 0.5
        sizes: Annotated[tuple[Annotated[Int, Field(ge=1)], ...], Field(min_length=1)] = (1,)

        @model_validator(mode="after")
        def _rule(self):
            check(len(self.sizes) < 4 or self.rate < 1, "rate", "must be < 1 with four or more sizes")
            return self

    class Branch(ConfigModel):
        kind: Literal["branch", "twig"]
        count: Int = 1

    class Tree(ConfigModel):
        parts: tuple[Annotated[Union[Leaf, Branch], Field(discriminator="kind")], ...] = ()  # noqa: UP007
        name: str = "t"
        MESSAGES: ClassVar[dict[tuple[str, str], str]] = {("name", "string_type"): "give the tree a name"}

    return Tree


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"parts": [{"kind": "leaf", "rate": 0}]}, r"^parts\[0\]\.rate: must be in \(0, 1\], got 0$"),
        ({"parts": [{"kind": "leaf", "rate": 2.5}]}, r"^parts\[0\]\.rate: must be in \(0, 1\], got 2\.5$"),
        ({"parts": [{"kind": "leaf", "sizes": [1, 0]}]}, r"^parts\[0\]\.sizes\[1\]: must be >= 1, got 0$"),
        ({"parts": [{"kind": "leaf", "sizes": []}]}, r"^parts\[0\]\.sizes: must not be empty$"),
        (
            {"parts": [{"kind": "leaf", "sizes": [1, 2, 3, 4], "rate": 1}]},
            r"^parts\[0\]\.rate: must be < 1 with",
        ),
        ({"parts": [{}, {"kind": "twg"}]}, r"^parts\[0\]\.kind: missing; one of leaf, branch, twig\n"),
        ({"parts": [{"kind": "twg"}]}, r"^parts\[0\]\.kind: unknown kind 'twg' \(did you mean 'twig'\?\)"),
        (
            {"parts": [{"kind": "branch", "cuont": 2}]},
            r"^parts\[0\]\.cuont: unknown key \(did you mean 'count'\?\)",
        ),
        (
            {"parts": [{"kind": "branch", "count": True}]},
            r"^parts\[0\]\.count: expected an integer, got True",
        ),
        ({"parts": [{"kind": "leaf", "rate": "fast"}]}, r"^parts\[0\]\.rate: expected a number, got 'fast'"),
        ({"name": 3}, r"^name: give the tree a name$"),
        ({"parts": 3}, r"^parts: expected a list, got 3 \(int\)$"),
    ],
)
def test_pydantic_errors_become_key_path_messages(data, message):
    Tree = _toy_models()
    with pytest.raises(ConfigError, match=message):
        from_dict(Tree, data)


def test_several_problems_are_listed_once_each_and_numeric_strings_are_numbers():
    import pickle

    Tree = _toy_models()
    with pytest.raises(ConfigError) as info:
        from_dict(Tree, {"parts": [{"kind": "leaf", "rate": -1, "sizes": [0]}], "name": 1}, "tree")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("tree.parts[0].rate: must be in (0, 1]")
    assert lines[1:] == [
        "  also: tree.parts[0].sizes[0]: must be >= 1, got 0",
        "  also: tree.name: give the tree a name",
    ]
    again = pickle.loads(pickle.dumps(info.value))  # errors travel from worker processes intact
    assert str(again) == str(info.value) and again.key == "tree.parts[0].rate"
    tree = from_dict(Tree, {"parts": [{"kind": "leaf", "rate": "1e-3"}]})  # YAML 1.1 reads 1e-3 as a string
    assert tree.parts[0].rate == 0.001
    with pytest.raises(ConfigError, match=r"^rate: must be in \(0, 1\], got 7\.0$"):
        tree.parts[0].replace(rate=7.0)  # replace() validates like loading does


def test_overrides_take_the_key_form_config_errors_print():
    """A user who copies ``methods[0].heads`` from an error message can pass it to --set as it is."""
    with pytest.raises(ConfigError) as err:
        from_dict(ExperimentConfig, apply_overrides(BASE, ["methods.0.heads=0"]))
    assert "methods[0].heads" in str(err.value)
    fixed = apply_overrides(BASE, ["methods[0].heads=3", "methods[cg].label=CG"])
    assert fixed == apply_overrides(BASE, ["methods.0.heads=3", "methods.cg.label=CG"])
    assert from_dict(ExperimentConfig, fixed).methods[0].heads == 3
    with pytest.raises(ConfigError, match="empty key part"):
        apply_overrides(BASE, ["methods[].heads=3"])
