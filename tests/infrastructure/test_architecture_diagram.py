"""The README's architecture diagram is generated from template.yaml and the pipeline definition, and
stays current: every function and state machine is on it, every event rule is an arrow, every
pipeline step is a box."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from local.aws.stack.template import load_template

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("architecture_diagram", ROOT / "scripts" / "architecture_diagram.py")
diagram = importlib.util.module_from_spec(spec)
spec.loader.exec_module(diagram)


def test_the_readme_holds_the_current_diagram():
    assert diagram.main(["--check"]) == 0, "run: python scripts/architecture_diagram.py"


def test_a_stale_diagram_is_caught(tmp_path):
    readme = tmp_path / "README.md"
    text = (ROOT / "README.md").read_text()
    readme.write_text(text.replace("StartPipelineFunction -.->", "StartPipelineFunction -->", 1))
    assert diagram.main(["--check", "--readme", str(readme)]) == 1
    assert diagram.main(["--readme", str(readme)]) == 0  # regenerating mends it
    assert readme.read_text() == text


def test_every_function_rule_and_step_is_drawn():
    template = load_template(ROOT / "template.yaml")
    definition = json.loads((ROOT / "jobs" / "pipeline_definition.json").read_text())
    text = diagram.mermaid(template, definition)
    resources = template["Resources"]
    for logical_id, resource in resources.items():
        if resource["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine"):
            assert re.search(rf"^\s+{logical_id}\W", text, re.M), f"{logical_id} is not drawn"
            for name, event in (resource["Properties"].get("Events") or {}).items():
                if event["Type"] == "EventBridgeRule":
                    assert re.search(rf"-->\|\"[^\"]+\"\| {logical_id}$", text, re.M), f"rule {name} has no arrow"
    names, edges = diagram.pipeline_steps(definition)
    assert [step["Name"] for step in definition["Steps"]] == names[: len(definition["Steps"])]
    for name in names:
        assert f'step_{diagram.node_id(name)}("{name}")' in text
    # The steps run in order: each non-first top-level step follows the one before it.
    order = [step["Name"] for step in definition["Steps"]]
    for before, after in zip(order, order[1:]):
        assert (before, after) in {(a, b) for a, b, _ in edges}, (before, after)
