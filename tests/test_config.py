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
    result = runner.invoke(app, [command, "--help"], terminal_width=400)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_docs_option_table_is_generated_from_the_table() -> None:
    readme = (ROOT / "docs" / "configuration.md").read_text()
    start, end = "<!-- options-table:start -->\n", "<!-- options-table:end -->"
    assert start in readme and end in readme, "docs/configuration.md lost its option table markers"
    shown = readme[readme.index(start) + len(start) : readme.index(end)]
    assert shown == config.markdown_table(), "regenerate it: python -m replayer.config --markdown"


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "lambda"])
def test_each_commands_help_shows_exactly_its_options(command: str) -> None:
    text = _help(command)
    for option in options_for(command):
        for flag in option.flags:
            assert re.search(rf"(^|[\s,]){re.escape(flag)}\b", text), f"{command} --help lacks {flag}"
        if option.metavar:
            assert f"{option.flag} {option.metavar}" in text
        if option.env:
            assert option.env in text, f"{command} --help does not name {option.env}"
    declared = {f for o in options_for(command) for f in o.flags} | _BUILTIN
    options = text.split("Options:", 1)[1]
    heads = re.findall(r"^ {2}(-.*?)(?: {2,}|$)", options, re.M)
    shown = {flag for head in heads for flag in re.findall(r"(?<!\S)(--?[a-z][\w-]*)", head)}
    assert shown - declared == set(), f"{command} --help shows flags not in config.OPTIONS"
    assert {f for o in options_for(command) for f in o.flags} <= shown


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
    settings = load("lambda", {}, dict.fromkeys(variables, "") | {"REPLAYER_TO": "s3://archive-bucket"})
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
            {"REPLAYER_CONCURRENCY": "many", "REPLAYER_TO": "-", "REPLAYER_QUEUE": "http://h/1/q"},
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
