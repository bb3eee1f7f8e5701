"""The AWS latency and cost model: its README table is current, every number has a source and a
range, it follows the stack settings, and the dev design meets the 15-minute target on paper."""
from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

from local.aws.stack.template import load_template

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("aws_performance_model", ROOT / "scripts" / "aws_performance_model.py")
model = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = model  # its dataclasses look their module up while being defined
spec.loader.exec_module(model)


@pytest.fixture(scope="module")
def inputs():
    return load_template(ROOT / "template.yaml"), (ROOT / "samconfig.toml").read_text(encoding="utf-8")


def _module_constant(path: Path, name: str):
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"{name} not found in {path}")


def test_the_readme_holds_the_current_table():
    assert model.main(["--check"]) == 0, "run: python scripts/aws_performance_model.py"


def test_a_stale_table_is_caught(tmp_path):
    readme = tmp_path / "README.md"
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(model.BEGIN)
    stale = text[:start] + text[start:].replace("| dev | 10k |", "| dev | 10k (old) |", 1)
    assert stale != text
    readme.write_text(stale, encoding="utf-8")
    assert model.main(["--check", "--readme", str(readme)]) == 1
    assert model.main(["--readme", str(readme)]) == 0  # regenerating mends it
    assert readme.read_text(encoding="utf-8") == text


def test_every_number_has_a_source_and_a_range():
    for name, fact in model.FACTS.items():
        assert fact.source in model.SOURCES, name
        assert fact.low <= fact.typical <= fact.high, name
    for key, source in model.SOURCES.items():
        assert source.title, key
        assert source.url or key == "assumption", key
    with pytest.raises(ValueError):
        model.Fact(5, 6, 7, "s", "assumption")


def test_the_model_uses_the_jobs_own_constants():
    assert model.BULK_THRESHOLD_ROWS == _module_constant(ROOT / "jobs" / "ingest.py", "DEFAULT_DIRECT_WRITE_MIN_ROWS")


def test_settings_come_from_the_template_and_samconfig(inputs):
    template, samconfig = inputs
    dev = model.stack_settings(template, samconfig, "dev")
    prod = model.stack_settings(template, samconfig, "prod")
    assert dev["MaxTuningJobs"] == "4" and dev["MaxParallelTuningJobs"] == "4"
    assert dev["IngestionMode"] == "OfflineStore" and prod["IngestionMode"] == "Auto"
    assert prod["TrainingInstanceCount"] == "2" and prod["MaxTuningJobs"] == "12"
    assert dev["CanaryWaitSeconds"] == str(template["Parameters"]["CanaryWaitSeconds"]["Default"])
    for settings in (dev, prod):  # every instance type the stack uses has a price
        for name in ("ProcessingInstanceType", "TrainingInstanceType", "EvaluateInstanceType"):
            kind = "training" if name == "TrainingInstanceType" else "processing"
            assert settings[name] in model.PRICES_PER_HOUR[kind], name
        assert settings["EndpointInstanceType"] in model.PRICES_PER_HOUR["hosting"]


def test_dev_reaches_a_registered_model_within_15_minutes_at_10k_rows(inputs):
    template, samconfig = inputs
    [dev_10k] = [s for s in model.scenarios(template, samconfig) if s.env == "dev" and s.rows == 10_000]
    typical, optimistic, pessimistic = dev_10k.registered()
    assert typical <= model.TARGET_DROP_TO_REGISTERED_MINUTES * 60
    assert optimistic < typical < pessimistic
    reference = model.reference_scenario(template, samconfig)
    assert reference.registered()[0] > typical


def test_the_model_answers_to_the_design_choices(inputs):
    template, samconfig = inputs
    dev = model.stack_settings(template, samconfig, "dev")

    def minutes(rows=10_000, **changes):
        return model.Scenario("dev", rows, {**dev, **changes}).registered()[0] / 60

    # Each trial wave pays a training job's start-up: 2 at a time is one more wave than 4.
    assert minutes(MaxParallelTuningJobs="2") - minutes() == pytest.approx(
        (model.FACTS["training_startup_s"].typical + model.FACTS["ray_start_s"].typical
         + model.FACTS["trial_fixed_s"].typical
         + model.FACTS["trial_per_row_s"].typical * 6_000 / (1 + model.FACTS["core_scaling_efficiency"].typical)
         ) / 60)  # 6,000 training rows on an ml.m5.xlarge: 4 vCPUs, 2 more than measured
    # PutRecord waits for the offline store; Auto uses it below the bulk threshold only.
    assert minutes(IngestionMode="PutRecord") - minutes() > model.FACTS["offline_store_wait_s"].typical / 60
    assert minutes(IngestionMode="Auto") > minutes()
    assert minutes(1_000_000, IngestionMode="Auto") == pytest.approx(minutes(1_000_000))
    # More data takes longer and costs more.
    small, large = (model.Scenario("dev", rows, dev) for rows in (10_000, 10_000_000))
    assert large.registered()[0] > small.registered()[0] and large.cost()[0] > small.cost()[0]


def test_one_job_for_ingest_and_preprocess_saves_a_processing_start_up(inputs):
    template, samconfig = inputs
    [dev_10k] = [s for s in model.scenarios(template, samconfig) if s.env == "dev" and s.rows == 10_000]
    merged = model.merged_scenario(template, samconfig)
    saved = dev_10k.registered()[0] - merged.registered()[0]
    assert saved == pytest.approx(model.FACTS["processing_startup_s"].typical
                                  + model.FACTS["pipeline_step_transition_s"].typical)
    assert merged.cost()[0] < dev_10k.cost()[0]


def test_a_bigger_instance_does_not_pay_at_10k_rows(inputs):
    """Why one instance type serves every size here: start-up, not work, is the run."""
    template, samconfig = inputs
    choices = {(rows, kind): (seconds[0], cost[0])
               for rows, kind, seconds, cost in model.instance_choices(template, samconfig)}
    small, big = choices[(10_000, "ml.m5.xlarge")], choices[(10_000, "ml.m5.4xlarge")]
    assert small[0] - big[0] < 60 and big[1] > 1.5 * small[1]
    assert choices[(10_000_000, "ml.m5.4xlarge")][0] < choices[(10_000_000, "ml.m5.xlarge")][0]


def test_a_blue_green_update_waits_for_the_canary(inputs):
    template, samconfig = inputs
    dev = model.stack_settings(template, samconfig, "dev")
    scenario = model.Scenario("dev", 10_000, dev)
    first, update = scenario.serving(True)[0], scenario.serving(False)[0]
    assert update - first == pytest.approx(float(dev["CanaryWaitSeconds"]))
    longer = model.Scenario("dev", 10_000, {**dev, "CanaryWaitSeconds": "900"})
    assert longer.serving(False)[0] - update == pytest.approx(600)


def test_the_put_record_bench_row_points_at_this_model():
    """bench P1's PutRecord row is reported, judged here; its AWS figures are this model's."""
    from bench.harness import REPORTED, Target

    p1 = ROOT / "bench" / "p1_ingest.py"
    assert _module_constant(p1, "AWS_PUT_RECORD_LATENCY_S") == model.FACTS["put_record_latency_s"].typical
    assert _module_constant(p1, "AWS_CALLS_IN_FLIGHT") == (
        model.VCPUS["ml.m5.xlarge"] * model.PUT_RECORD_CALLS_PER_ACTOR)
    reported = Target(REPORTED, 0, note="see AWS model (docs/performance.md)")
    assert reported.describe("rows/s") == "see AWS model (docs/performance.md)"
    assert reported.is_met(636.0, 418.0) is None
    with pytest.raises(ValueError):
        Target(REPORTED, 0)


def test_tuning_trials_carry_no_warm_pool_setting():
    """botocore's model lets a tuning job's training definition carry KeepAlivePeriodInSeconds, but
    tuning keeps no warm pools (docs/performance.md): the definition must not pretend otherwise."""
    import json

    import botocore.session

    shape = botocore.session.get_session().get_service_model("sagemaker").shape_for(
        "HyperParameterTrainingJobDefinition")
    assert "KeepAlivePeriodInSeconds" in shape.members["ResourceConfig"].members
    definition = json.loads((ROOT / "jobs" / "pipeline_definition.json").read_text(encoding="utf-8"))
    assert "KeepAlivePeriodInSeconds" not in json.dumps(definition)


def test_the_stack_and_the_pipeline_agree_on_the_new_settings(inputs):
    """The stack sends EvaluateInstanceType and IngestionMode; its defaults are the pipeline's."""
    import json

    template, _ = inputs
    definition = json.loads((ROOT / "jobs" / "pipeline_definition.json").read_text(encoding="utf-8"))
    defaults = {p["Name"]: p.get("DefaultValue") for p in definition["Parameters"]}
    for name in ("EvaluateInstanceType", "IngestionMode"):
        assert template["Parameters"][name]["Default"] == defaults[name], name
    assert template["Parameters"]["IngestionMode"]["AllowedValues"] == ["Auto", "PutRecord", "OfflineStore"]
