"""decode(encode(s)) == s for arbitrary NFC-normalised Unicode (the normaliser is NFC)."""

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from qwen3_jax.text import build

ADDED_TEXT = [content for content, _ in build.ADDED_TOKENS]

nfc_text = st.text(max_size=200).map(lambda s: unicodedata.normalize("NFC", s)).filter(
    lambda s: not any(t in s for t in ADDED_TEXT))


@settings(max_examples=300, deadline=None)
@given(nfc_text)
def test_round_trip(tok, s):
    assert tok.decode(tok.encode(s)) == s


@settings(max_examples=100, deadline=None)
@given(st.lists(nfc_text, max_size=8))
def test_round_trip_batch(tok, texts):
    assert tok.decode_batch(tok.encode_batch(texts)) == texts
