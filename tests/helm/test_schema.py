"""values.schema.json covers every value and rejects bad ones with a clear message."""

from __future__ import annotations

import pathlib

import helm_python as helm
import pytest
import yaml

from conftest import CHART, MATRIX, render

BAD = sorted((pathlib.Path(__file__).parent / "bad-values").glob("*.yaml"))


def test_there_are_at_least_ten_bad_values_files():
    assert len(BAD) >= 10, BAD


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_values_are_rejected_with_the_expected_message(chart, path):
    text = path.read_text()
    first = text.splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name}: first line must be '# expect: <message fragment>'"
    expected = first.removeprefix("# expect: ")
    values = yaml.safe_load(text)
    with pytest.raises(helm.HelmValuesError) as err:
        render(chart, values)
    assert "values don't meet the specifications of the schema" in str(err.value)
    assert expected in str(err.value), str(err.value)


def test_set_replicas_abc_fails_like_helm_install_set(chart):
    values = helm.parse_set_string("controller.replicas=abc")
    with pytest.raises(helm.HelmValuesError, match="at '/controller/replicas': got string, want integer"):
        render(chart, values)


def test_defaults_and_every_matrix_case_pass_the_schema(chart):
    for case, values in MATRIX.items():
        chart.validate_schema(chart.merge_values(values))


def walk_schema(schema, path=()):
    yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from walk_schema(sub, path + (key,))


def walk_values(values, path=()):
    yield path, values
    if isinstance(values, dict):
        for key, sub in values.items():
            yield from walk_values(sub, path + (key,))


def test_schema_closes_every_object_and_describes_every_value(chart):
    for path, node in walk_schema(chart.schema):
        name = ".".join(path) or "<root>"
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{name} accepts unknown keys"
        if path:
            assert node.get("description"), f"{name} has no description"


def test_every_default_value_is_in_the_schema(chart):
    """Every key of values.yaml is a declared property (so it is typed and described)."""
    nodes = dict(walk_schema(chart.schema))
    for path, _ in walk_values(chart.values):
        if not path:
            continue
        parent = nodes.get(path[:-1])
        # Free-form maps (labels, annotations, selectors) declare their values, not their keys.
        if parent is not None and "properties" not in parent and parent.get("type") == "object":
            continue
        assert path in nodes, f"value {'.'.join(path)} is not in values.schema.json"


def test_schema_declares_nothing_that_values_yaml_lacks(chart):
    """The reverse direction: every declared property has a default in values.yaml."""
    defaults = dict(walk_values(chart.values))
    for path, _ in walk_schema(chart.schema):
        if "resources" in path[:-2]:
            continue  # requests/limits name optional quantities (cpu, memory, ephemeral-storage)
        assert path in defaults, f"{'.'.join(path)} is in values.schema.json but has no default in values.yaml"
