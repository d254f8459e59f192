"""Every option of every command has help text, and every option that takes a value says its
default (docs: each command's page lists these options; ``--help`` is the reference).

Each module of ``igcv_nas/cli`` builds its parser(s) inside its ``_main``; the test captures
every parser at its ``parse_args`` call (nothing runs past it), so a new command or a new
sub-command is walked without being named here."""
from __future__ import annotations

import argparse
import importlib
import pkgutil

import pytest

import igcv_nas.cli

# sub-command words that a command dispatches on before it builds a parser
SUBCOMMANDS = {"igcv_nas.cli.latency": [["build-lut"]]}
NO_VALUE = (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._StoreConstAction,
            argparse._HelpAction, argparse._VersionAction, argparse._CountAction)


class _Captured(Exception):
    pass


def _modules() -> list[str]:
    return sorted(f"igcv_nas.cli.{m.name}" for m in pkgutil.iter_modules(igcv_nas.cli.__path__)
                  if not m.name.startswith("_"))


def parsers() -> list[argparse.ArgumentParser]:
    """Every parser of every command, captured where the command parses its arguments."""
    out: list[argparse.ArgumentParser] = []

    def capture(self, args=None, namespace=None):
        out.append(self)
        raise _Captured

    real = argparse.ArgumentParser.parse_args
    argparse.ArgumentParser.parse_args = capture  # type: ignore[method-assign]
    try:
        for name in _modules():
            mod = importlib.import_module(name)
            for argv in [[]] + SUBCOMMANDS.get(name, []):
                try:
                    mod._main(list(argv))
                except _Captured:
                    pass
                else:
                    raise AssertionError(f"{name}._main({argv}) parsed no arguments")
    finally:
        argparse.ArgumentParser.parse_args = real  # type: ignore[method-assign]
    return out


PARSERS = parsers()


def test_every_command_module_has_a_parser():
    progs = sorted(p.prog for p in PARSERS)
    assert progs == sorted(["igcv-export", "igcv-inspect", "igcv-latency",
                            "igcv-latency build-lut", "igcv-report", "igcv-search",
                            "igcv-train"])


@pytest.mark.parametrize("parser", PARSERS, ids=[p.prog for p in PARSERS])
def test_every_option_has_help_with_its_default(parser):
    missing, no_default = [], []
    for a in parser._actions:
        if isinstance(a, argparse._HelpAction):
            continue
        name = "/".join(a.option_strings) or a.dest
        if not (a.help or "").strip() or a.help == argparse.SUPPRESS:
            missing.append(name)
            continue
        takes_value = a.option_strings and not isinstance(a, NO_VALUE)
        if takes_value and not a.required and "default" not in a.help.lower():
            no_default.append(name)
    assert not missing, f"{parser.prog}: options without help: {missing}"
    assert not no_default, f"{parser.prog}: options whose help does not say the default: " \
                           f"{no_default}"


@pytest.mark.parametrize("parser", PARSERS, ids=[p.prog for p in PARSERS])
def test_help_renders(parser):
    text = parser.format_help()
    assert parser.prog in text
