"""local.jobs_image: the jobs image's environment, read from the Dockerfile, built with uv, rebuilt
when the pins change, and a WORKDIR that holds only what the Dockerfile copies there."""
from __future__ import annotations

import subprocess

import pytest

from local import REPO_ROOT
from local.jobs_image import JobsImage, JobsImageError, default_image, read_dockerfile


def test_the_real_dockerfile_is_read_as_the_image_is_built():
    spec = read_dockerfile(REPO_ROOT / "jobs" / "Dockerfile")
    assert spec.python_version == "3.11"
    assert spec.requirements == "jobs/requirements.txt" and spec.install_flags == ("--no-deps",)
    assert spec.workdir == "/opt/program"
    assert [(c.source, c.destination) for c in spec.program_copies()] == [
        ("jobs/", "/opt/program/jobs/"), ("functions/shared/mlops_shared/", "/opt/program/mlops_shared/")]
    assert spec.env["PYTHONPATH"] == "/opt/program" and spec.env["MPLBACKEND"] == "Agg"
    assert any("import jobs.common" in program for program in spec.smoke_tests)


def test_the_environment_is_the_images_not_the_callers(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    monkeypatch.setenv("VIRTUAL_ENV", "/work/.venv")
    image = default_image()
    program = image.program_dir()
    env = image.environment(program)
    assert env["PYTHONPATH"] == str(program)
    assert env["PATH"].split(":")[0] == str(image.env_dir / "bin")
    assert "VIRTUAL_ENV" not in env and env["RAY_USAGE_STATS_ENABLED"] == "0"
    ray = subprocess.run([str(image.python), "-c", "import ray, xgboost; print(ray.__version__, xgboost.__version__)"],
                         env=env, cwd=program, capture_output=True, text=True, check=True)
    pins = dict(line.split("==") for line in (REPO_ROOT / "jobs" / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert ray.stdout.split() == [pins["ray"], pins["xgboost"]]


DOCKERFILE = """FROM python:3.11-slim-bookworm
ENV APP_MODE=local \\
    PYTHONPATH=/opt/program
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-deps -r /tmp/requirements.txt && pip check
WORKDIR /opt/program
COPY app/ /opt/program/app/
COPY entry.sh /usr/local/bin/entry
RUN python3 -c "import six, app"
"""


@pytest.fixture
def small_image(tmp_path):
    context = tmp_path / "context"
    (context / "app").mkdir(parents=True)
    (context / "app" / "__init__.py").write_text("VERSION = 1\n")
    (context / "entry.sh").write_text("#!/bin/sh\n")
    (context / "Dockerfile").write_text(DOCKERFILE)
    (context / "requirements.txt").write_text("six==1.17.0\n")
    return context, tmp_path / "base"


def test_a_small_image_is_built_once_and_rebuilt_when_its_pins_change(small_image, capfd):
    context, base = small_image
    image = JobsImage(dockerfile=context / "Dockerfile", context=context, base_dir=base).ensure()
    assert "building the jobs image environment" in capfd.readouterr().err
    first = image.env_dir
    assert image.is_built()
    JobsImage(dockerfile=context / "Dockerfile", context=context, base_dir=base).ensure()
    assert "building" not in capfd.readouterr().err  # cached

    (context / "requirements.txt").write_text("six==1.17.0\nidna==3.20\n")
    rebuilt = JobsImage(dockerfile=context / "Dockerfile", context=context, base_dir=base).ensure()
    assert rebuilt.env_dir != first and not first.exists()  # the old environment is removed
    program = rebuilt.program_dir()
    result = subprocess.run([str(rebuilt.python), "-c", "import idna, six, app, os; print(os.environ['APP_MODE'])"],
                            env=rebuilt.environment(program), cwd=program, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "local"
    assert sorted(p.name for p in program.iterdir()) == ["app"]  # entry.sh went to /usr/local/bin, not WORKDIR


def test_the_program_snapshot_follows_its_sources(small_image):
    context, base = small_image
    image = JobsImage(dockerfile=context / "Dockerfile", context=context, base_dir=base)
    first = image.program_dir()
    assert image.program_dir() == first
    (context / "app" / "__pycache__").mkdir()
    (context / "app" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert image.program_dir() == first  # bytecode caches are not sources
    (context / "app" / "__init__.py").write_text("VERSION = 2\n")
    second = image.program_dir()
    assert second != first and (second / "app" / "__init__.py").read_text() == "VERSION = 2\n"
    assert (first / "app" / "__init__.py").read_text() == "VERSION = 1\n"  # a running job keeps its code


def test_a_failing_import_check_fails_the_build_with_its_error(small_image):
    context, base = small_image
    (context / "Dockerfile").write_text(DOCKERFILE.replace("import six, app", "import six, sagemaker"))
    with pytest.raises(JobsImageError, match="(?s)import check.*No module named 'sagemaker'"):
        JobsImage(dockerfile=context / "Dockerfile", context=context, base_dir=base).ensure()


@pytest.mark.parametrize("dockerfile, message", [
    ("FROM debian:bookworm\n", "not a python:X.Y image"),
    ("FROM python:3.11-slim\nRUN pip install numpy\n", "installs without -r"),
    ("FROM python:3.11-slim\nRUN pip install -r /tmp/r.txt\n", "no COPY puts it there"),
    ("FROM python:3.11-slim\nCOPY a b\nRUN pip install -r b && pip install -r b\n", "expected one"),
])
def test_a_dockerfile_of_another_shape_is_refused_clearly(tmp_path, dockerfile, message):
    path = tmp_path / "Dockerfile"
    path.write_text(dockerfile)
    with pytest.raises(JobsImageError, match=message):
        read_dockerfile(path)
