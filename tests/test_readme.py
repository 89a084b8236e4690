from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_installs_and_tests_exactly_as_the_readme_says():
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set-up", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.strip() for line in setup.splitlines() if line.strip() and not line.startswith("#")]
    install, _main_job, tests = commands
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci and tests in ci
