"""The one option table: the docs, every command's --help and the Lambda's environment agree with it."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest
from cfnlint.decode import cfn_yaml
from typer.testing import CliRunner

from replayer import config
from replayer.cli import app
from replayer.config import COMMANDS, OPTIONS, Settings, load, options_for
from replayer.errors import ConfigError
from tests.support import ROOT

runner = CliRunner()
_BUILTIN = {"--help", "-h", "--version", "--install-completion", "--show-completion", "--keep"}


def _help(command: str) -> str:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_docs_option_table_is_generated_from_the_table() -> None:
    readme = (ROOT / "docs" / "configuration.md").read_text()
    start, end = "<!-- options-table:start -->\n", "<!-- options-table:end -->"
    assert start in readme and end in readme, "docs/configuration.md lost its option table markers"
    shown = readme[readme.index(start) + len(start) : readme.index(end)]
    assert shown == config.markdown_table(), "regenerate it: python -m replayer.config --markdown"


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "lambda"])
def test_each_commands_help_shows_exactly_its_options_in_panels_within_100_columns(command: str) -> None:
    text = _help(command)
    panels, _, epilog = text.partition(" Also: ")
    shown_options = [o for o in options_for(command) if not o.tuning]
    heads = re.findall(r"^│ (--?[a-z][\w-]*)(?: +(-[a-z]))?", panels, re.M)
    shown = {flag for head in heads for flag in head if flag}
    declared = {f for o in shown_options for f in o.flags}
    assert shown == declared | {"--help", "-h"}, f"{command} --help shows other flags than its own"
    for option in shown_options:
        if option.metavar:
            assert re.search(rf"^│ {re.escape(option.flag)} .*{re.escape(option.metavar)}", panels, re.M)
        others = "|".join(c for c in ("replay", "fetch", "redrive", "drain", "run", "status") if c != command)
        assert not re.search(rf"(?<![\w-])({others}): ", config.help_text(option, command)), (
            f"{option.flag}'s help for {command} speaks of another command"
        )
    tuning = [o.flag for o in options_for(command) if o.tuning]
    assert set(" ".join(epilog.split()).split()) >= set(tuning)  # named, not explained
    assert "REPLAYER_" in panels.rsplit("╰", 1)[-1] + epilog  # where the variables are: said once
    panel_titles = re.findall(r"^╭─ (.+?) ─", panels, re.M)
    assert panel_titles == [p for p in config.PANELS if p in panel_titles]  # in the one order
    assert all(len(line) <= 100 for line in text.splitlines())


def test_replay_help_fits_about_fifty_lines() -> None:
    assert len(_help("replay").splitlines()) <= 52


def test_help_has_real_metavars_and_one_style() -> None:
    for command in [c for c in COMMANDS if c != "lambda"]:
        text = _help(command)
        assert "<list[str]>" not in text and "range>" not in text and "<int" not in text
        assert "Env:" not in text and "env var:" not in text  # the one style is [default: X; env: VAR]


def test_every_option_is_a_setting_and_every_setting_an_option() -> None:
    names = {f.name for f in fields(Settings)} - {"warnings"}
    assert {o.name for o in OPTIONS} == names
    assert len({o.env for o in OPTIONS if o.env}) == len([o for o in OPTIONS if o.env])


def test_the_lambdas_environment_is_the_tables() -> None:
    document = cfn_yaml.load(str(ROOT / "deploy" / "template.yaml"))
    variables: set[str] = set()
    for resource in document["Resources"].values():
        env = (resource.get("Properties") or {}).get("Environment") or {}
        variables |= {name for name in env.get("Variables", {}) if name.startswith("REPLAYER_")}
    assert variables, "deploy/template.yaml sets no REPLAYER_ variable"
    lambda_env = {o.env for o in options_for("lambda") if o.env}
    assert variables <= lambda_env, (
        f"the template sets variables the Lambda does not read: {variables - lambda_env}"
    )
    env = dict.fromkeys(variables, "") | {"REPLAYER_TO": "s3://archive-bucket", "REPLAYER_ALLOW_STREAMS": "*"}
    settings = load("lambda", {}, env)
    assert settings.to == ("s3://archive-bucket",)
    readme = (ROOT / "docs" / "configuration.md").read_text()
    for env in lambda_env:
        assert f"`{env}`" in readme


@pytest.mark.parametrize("command", ["replay", "fetch", "redrive", "drain", "run", "lambda"])
def test_replayer_to_with_commas_means_the_same_for_every_command(command: str) -> None:
    env = {
        "REPLAYER_TO": "lambda:repair,lambda:audit other",
        "REPLAYER_QUEUE": "http://127.0.0.1:1/123456789012/failures",
        "REPLAYER_REDRIVE_FROM": "file:/tmp/archive",
        "REPLAYER_ALLOW_STREAMS": "*",
    }
    flags = {"stream_arn": "x", "shard_id": "s", "start": "1", "end": "2"} if command == "fetch" else {}
    assert load(command, flags, env).to == ("lambda:repair", "lambda:audit", "other")
    del env["REPLAYER_TO"]
    assert load(command, flags | {"to": ["lambda:repair,lambda:audit", "other"]}, env).to == (
        "lambda:repair",
        "lambda:audit",
        "other",
    )


def test_a_bad_value_reads_the_same_from_a_flag_or_the_environment() -> None:
    with pytest.raises(ConfigError) as from_flag:
        load("replay", {"concurrency": "many", "to": ["-"]}, {})
    with pytest.raises(ConfigError) as from_env:
        load(
            "drain",
            {},
            {
                "REPLAYER_CONCURRENCY": "many",
                "REPLAYER_TO": "-",
                "REPLAYER_QUEUE": "http://h/1/q",
                "REPLAYER_ALLOW_STREAMS": "*",
            },
        )
    assert str(from_flag.value) == "--concurrency: 'many' is not a whole number"
    assert str(from_env.value) == "REPLAYER_CONCURRENCY: 'many' is not a whole number"


def test_run_and_drain_help_name_every_sink_form() -> None:
    from replayer.sinks import SINK_KINDS, describe_uri_forms

    assert describe_uri_forms() == config.SINK_FORMS  # the registry's forms, written out for start-up
    for command in ("replay", "fetch", "drain", "run"):
        text = " ".join(_help(command).split())
        for kind in SINK_KINDS:
            assert kind.form in text, f"{command} --help lacks {kind.form}"
    assert "lambda:NAME[:QUALIFIER]" in " ".join(_help("drain").split())


@pytest.mark.parametrize("command", ["drain", "run", "lambda"])
def test_a_consumer_with_no_stream_allowed_is_refused_in_one_line(command: str) -> None:
    env = {"REPLAYER_TO": "s3://archive-bucket", "REPLAYER_QUEUE": "https://sqs.eu-west-1.amazonaws.com/1/q"}
    with pytest.raises(ConfigError) as caught:
        load(command, {}, env)
    (line,) = str(caught.value).splitlines()
    assert line.startswith("--allow-stream (or REPLAYER_ALLOW_STREAMS) is required")
    assert load(command, {}, env | {"REPLAYER_ALLOW_STREAMS": "*"}).allow_streams == ("*",)
    assert load("replay", {"to": ["-"]}, {}).allow_streams == ()  # replay decides at pre-flight (its input)


def test_a_value_that_does_not_parse_is_one_problem_not_also_missing() -> None:
    with pytest.raises(ConfigError) as caught:
        load("drain", {"queue": "failures", "to": ["-"], "allow_streams": ["*"]}, {})
    (line,) = str(caught.value).splitlines()
    assert (
        "'failures' is not an SQS queue URL" in line and "aws sqs get-queue-url --queue-name failures" in line
    )
