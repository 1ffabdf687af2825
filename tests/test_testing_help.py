"""``help()`` answers: every public attribute of every public testing class
(and of the statistics snapshot) is described in what ``help()`` prints, the
two kinds of "side" are told apart, and no docstring points to notes that
``help()`` cannot show.
"""

from __future__ import annotations

import dataclasses
import inspect
import pydoc
import re
import socket
import typing

import pytest
import trio.testing

import trio_tlsretry.testing as testing
from trio_tlsretry import StreamState, TLSStreamStatistics


def help_text(obj: object) -> str:
    return pydoc.render_doc(obj, renderer=pydoc.plaintext)


def instances() -> dict[str, object]:
    """One instance of each public class of the testing package."""
    left, _right = trio.testing.memory_stream_pair()
    network = testing.FakeTCPNetwork()
    return {
        "AbruptEOFStream": testing.AbruptEOFStream(left),
        "CancelOutcome": testing.CancelOutcome(True, None, 0),
        "ChunkedStream": testing.ChunkedStream(left),
        "ConnectAttempt": testing.ConnectAttempt(("192.0.2.1", 443), "refused"),
        "CorruptingStream": testing.CorruptingStream(left, offset=0),
        "DelayedStream": testing.DelayedStream(left),
        "ExactProgressMemoryStream": testing.exact_progress_stream_pair()[0],
        "FailingStream": testing.FailingStream(left),
        "FakeHost": testing.FakeHost("example.org", ("192.0.2.1",)),
        "FakeTCPConnection": testing.FakeTCPConnection(
            ("127.0.0.1", 50000), ("127.0.0.1", 443), 1024, 0.0
        ),
        "FakeTCPNetwork": network,
        "FakeTCPSocket": testing.FakeTCPSocket(network, socket.AF_INET),
        "FaultStream": testing.FaultStream(left),
        "HangError": testing.HangError("stuck"),
        "InjectingStream": testing.InjectingStream(left, offset=0, data=b"!"),
        "SweepReport": testing.SweepReport(),
        "TLSContexts": testing.TLSContexts(),
    }


PUBLIC_CLASSES = sorted(name for name in testing.__all__ if inspect.isclass(getattr(testing, name)))


def test_every_public_class_has_an_instance_here() -> None:
    assert sorted(instances()) == PUBLIC_CLASSES


def public_attributes(instance: object) -> set[str]:
    cls = type(instance)
    names = {name for name in vars(instance) if not name.startswith("_")}
    if dataclasses.is_dataclass(cls):
        names |= {field.name for field in dataclasses.fields(cls)}
    names |= {
        name
        for name, value in inspect.getmembers(cls, lambda m: isinstance(m, property))
        if not name.startswith("_")
    }
    return names - set(vars(Exception("x")))


@pytest.mark.parametrize("name", PUBLIC_CLASSES)
def test_help_describes_every_attribute(name: str) -> None:
    instance = instances()[name]
    cls = type(instance)
    text = help_text(getattr(testing, name))
    missing = []
    for attribute in sorted(public_attributes(instance)):
        member = inspect.getattr_static(cls, attribute, None)
        if isinstance(member, property):
            # help() shows properties with their docstrings.
            documented = bool(member.__doc__) or any(
                isinstance(vars(base).get(attribute), property) and vars(base)[attribute].__doc__
                for base in cls.__mro__
            )
        else:
            # Plain and dataclass attributes: an "Attributes:" entry of the
            # class docstring, "name: what it is".
            documented = re.search(rf"^[ |]*{re.escape(attribute)}: \S", text, re.M) is not None
        if not documented:
            missing.append(attribute)
    assert not missing, f"help({name}) does not describe {missing}"


def test_help_on_the_statistics_describes_every_field() -> None:
    text = help_text(TLSStreamStatistics)
    for field in dataclasses.fields(TLSStreamStatistics):
        assert re.search(rf"^[ |]*{field.name}: \S", text, re.M), field.name
    state_text = help_text(StreamState)
    for member in StreamState:
        assert f'``{member.name}`` (``"{member.value}"``)' in state_text


def test_the_two_sides_have_two_names_and_their_values_are_spelled_out() -> None:
    assert typing.get_args(testing.ConnectionSide) == ("client", "server")
    assert typing.get_args(testing.Direction) == ("receive", "send")
    for method in (testing.FakeTCPConnection.reset_after, testing.FakeTCPConnection.eof_after):
        text = help_text(method)
        assert "ConnectionSide" in text
        assert '``"client"`` (the side that connected) or ``"server"``' in text
    for cls in (testing.CorruptingStream, testing.InjectingStream):
        text = help_text(cls)
        assert "Direction" in text
        assert '``"receive"`` (default)' in text
        assert '``"send"``' in text


def test_no_docstring_points_to_notes_help_cannot_show() -> None:
    offenders = []
    for name in testing.__all__:
        obj = getattr(testing, name)
        docs = [inspect.getdoc(obj) or ""]
        if inspect.isclass(obj):
            docs += [inspect.getdoc(member) or "" for _, member in inspect.getmembers(obj)]
        for doc in docs:
            if re.search(r"notes above|module notes|see above", doc, re.I):
                offenders.append(name)
    assert not offenders


def test_the_fixture_functions_have_docstrings() -> None:
    from trio_tlsretry.testing import _fixtures

    for name in _fixtures.__all__:
        if name.isupper():
            continue
        assert inspect.getdoc(getattr(_fixtures, name)), name
