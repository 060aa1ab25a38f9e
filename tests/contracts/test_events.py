"""An event is declared once: its class name is its type on the wire, its subject a class keyword."""

from __future__ import annotations

import pytest

from contracts.events import EVENT_TYPES, Event, ProfileCreated
from contracts.subjects import PROFILE_CREATED


def test_the_class_name_is_the_type_and_the_class_is_registered_under_it() -> None:
    assert ProfileCreated.TYPE == "ProfileCreated"
    assert ProfileCreated.SUBJECT == PROFILE_CREATED
    assert EVENT_TYPES["ProfileCreated"] is ProfileCreated
    assert all(cls.TYPE == name == cls.__name__ and cls.SUBJECT for name, cls in EVENT_TYPES.items())


def test_a_base_without_a_subject_is_no_event_type_and_a_second_declaration_is_refused() -> None:
    class Shared(Event):
        note: str = ""

    assert "Shared" not in EVENT_TYPES
    with pytest.raises(TypeError, match="ProfileCreated"):

        class ProfileCreated(Shared, subject="mailwarden.elsewhere"):
            pass

    assert EVENT_TYPES["ProfileCreated"].SUBJECT == PROFILE_CREATED


def test_the_old_declaration_with_class_attributes_is_refused() -> None:
    with pytest.raises(TypeError, match=r"subject=\.\.\."):

        class SomethingHappened(Event):
            TYPE = "SomethingHappened"
            SUBJECT = "mailwarden.something"

    assert "SomethingHappened" not in EVENT_TYPES
