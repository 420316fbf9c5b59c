"""Experiment configs: the shipped ones, their schema, published numbers by depth, families by kind."""

from pathlib import Path

from unrolled.experiments import load_config


def test_shipped_configs_are_valid():
    configs = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))
    assert configs, "no configs shipped"
    for path in configs:
        cfg = load_config(path)
        assert cfg.name == path.stem, f"{path}: name {cfg.name!r} should match the file name"


def test_every_shipped_config_points_to_the_schema_and_the_schema_is_current():
    from unrolled.experiments.config import schema_text

    root = Path(__file__).parents[2] / "configs"
    assert (root / "schema.json").read_text() == schema_text(), (
        "run: unrolled config schema --out configs/schema.json"
    )
    for path in root.glob("*.yaml"):
        assert path.read_text().startswith("# yaml-language-server: $schema=schema.json\n"), path


def test_the_schema_accepts_the_shipped_configs_and_refuses_bad_ones():
    """An editor's view, checked by an independent validator (jsonschema) on the JSON form of each YAML file."""
    import json

    import jsonschema
    import yaml

    root = Path(__file__).parents[2] / "configs"
    validator = jsonschema.Draft202012Validator(json.loads((root / "schema.json").read_text()))
    for path in root.glob("*.yaml"):
        data = json.loads(json.dumps(yaml.safe_load(path.read_text())))  # keys as an editor sees them
        assert not list(validator.iter_errors(data)), path
    demo = json.loads(json.dumps(yaml.safe_load((root / "demo.yaml").read_text())))
    for change in ({"trian": {}}, {"seeds": []}, {"methods": [{"name": "x", "kind": "memformer"}]}):
        assert list(validator.iter_errors({**demo, **change})), change
    published_as_lists = {**demo, "published": {"cg": [1.0, 2.0, 3.0, 4.0]}}
    assert not list(validator.iter_errors(published_as_lists))


def test_validating_with_the_base_class_picks_the_family():
    from unrolled.experiments.denoising import DenoisingExperiment
    from unrolled.experiments.regression import RegressionExperiment

    root = Path(__file__).parents[2] / "configs"
    assert type(load_config(root / "demo.yaml")) is RegressionExperiment
    assert type(load_config(root / "denoise_constrained_vs_erm.yaml")) is DenoisingExperiment


def test_published_numbers_are_keyed_by_depth_and_shown_where_they_exist():
    """The papercut: `--set depths=[1]` on a config with published numbers used to fail."""
    from unrolled.experiments.aggregate import published_at
    from unrolled.experiments.regression.report import markdown_table

    root = Path(__file__).parents[2] / "configs"
    cfg = load_config(root / "demo.yaml", ["depths=[1, 8]"])
    assert cfg.published is not None and cfg.published["memformer_lfom"][1] == 0.12
    published = published_at(cfg.published, cfg.depths)
    assert published["memformer_lfom"] == [0.12, None]  # the paper has no L = 8
    results = {
        "depths": [1, 8],
        "seeds": [0, 1],
        "published": published,
        "methods": {
            "memformer_lfom": {
                "label": "LFOM",
                "test": {"log_loss_mean": [0.2, -1.0], "log_loss_std": [0.1, 0.2], "diverged_seeds": [0, 0]},
            }
        },
    }
    table = markdown_table(results, "test")
    assert "| LFOM — paper | 0.12 |  |" in table
    lists = load_config(root / "demo.yaml", ["published.cg=[1, 2, 3, 4]"])  # the list shorthand
    assert lists.published["cg"] == {1: 1.0, 2: 2.0, 3: 3.0, 4: 4.0}
    gammas = load_config(root / "denoise_constrained_vs_erm.yaml", ["perturbation.test_gammas=[0.0, 0.5]"])
    assert gammas.published["ut_erm"] == {0.0: 3.8, 1.5: 42.6}


def test_errors_name_the_file_and_the_key_never_a_pydantic_dump():
    import pytest

    from unrolled.config import ConfigError

    root = Path(__file__).parents[2] / "configs"
    cases = {
        "methods.2.constraints.alpha=1.5": r"methods\[2\]\.constraints\.alpha: must be in \[0, 1\), got 1\.5$",
        "methods.1.kind=utt": r"methods\[1\]\.kind: unknown kind 'utt' \(did you mean 'ut'\?\); one of ut, vit, dust$",
        "task.kind=vidoe": r"task\.kind: unknown kind 'vidoe' \(did you mean 'video'\?\)",
        "perturbation.test_gammas=[]": r"perturbation\.test_gammas: must not be empty$",
        "methods.0.patch=[2, 8]": r"methods\[0\]\.patch: needs 3 entries, got 2$",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=r"denoise_constrained_vs_erm\.yaml .*: " + message) as info:
            load_config(root / "denoise_constrained_vs_erm.yaml", [override])
        text = str(info.value)
        for dump in ("pydantic", "Input should", "type=", "errors.pydantic.dev"):
            assert dump not in text, text
