"""store.parse_s3_timestamp gives what botocore's own (dateutil) parser gives."""

from __future__ import annotations

import datetime
import email.utils

import pytest
from botocore.utils import parse_timestamp
from hypothesis import given
from hypothesis import strategies as st

from s3mount.store import parse_s3_timestamp

moments = st.datetimes(min_value=datetime.datetime(1970, 1, 1),
                       max_value=datetime.datetime(2200, 12, 31))


@given(moments)
def test_listing_form(moment: datetime.datetime) -> None:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    assert parse_s3_timestamp(text) == parse_timestamp(text)


@given(moments)
def test_header_form(moment: datetime.datetime) -> None:
    text = email.utils.format_datetime(moment.replace(tzinfo=datetime.UTC), usegmt=True)
    parsed = parse_s3_timestamp(text)
    assert parsed == parse_timestamp(text)
    assert parsed.utcoffset() == datetime.timedelta(0)


@pytest.mark.parametrize("text", ["2026-11-30T07:22:25+01:00", "1700000000",
                                  "2026-11-30T07:22:25Z", "Mon, 30 Nov 2026 07:22:25 GMT"])
def test_other_forms_as_botocore_parses_them(text: str) -> None:
    assert parse_s3_timestamp(text) == parse_timestamp(text)


def test_garbage_is_an_error_as_in_botocore() -> None:
    with pytest.raises(ValueError):
        parse_s3_timestamp("Mon, 99 Foo 2026 07:22:25 GMT")
