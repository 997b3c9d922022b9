"""No input breaks parsing: arbitrary bytes and mutated real messages always get a classification.

And through the pipeline: every stored input, however broken, ends with a final status.
"""

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leadflow.config import IntakeConfig
from leadflow.intake.message import CLASSIFICATIONS, ParsedMessage, parse_message
from leadflow.intake.pipeline import process_inbound
from leadflow.store.inbound import store_inbound

MAIL = Path(__file__).resolve().parent / "fixtures" / "mail"
SAMPLES = [path.read_bytes() for path in sorted(MAIL.glob("*.eml"))]
SETTINGS = IntakeConfig(internal_domains=["ourco.example"], forwarders=["partner@reseller.example"])

# Pieces real mail is made of, to splice into messages.
PIECES = [b"\n", b"\r\n", b"\n\n", b": ", b"<", b">", b"@", b"=?utf-8?q?", b"?=", b"=?x-bad?b?", b"--",
          b"boundary=", b"Content-Type: multipart/mixed; boundary=x\n", b"Content-Type: message/rfc822\n",
          b"Content-Transfer-Encoding: base64\n", b"charset=bogus", b"From: . <a@b.c>\n",
          b"To: unlisted-recipients:;\n", b"---------- Forwarded message ---------\n", b"From: ",
          b"> ", b"\xff\xfe", b"\xc3", b"\x00", b"________________________________\n",
          b"Auto-Submitted: auto-replied\n", b"Date: Thu, 31 Feb 99999 25:61:61 +9999\n"]


@st.composite
def mutated_messages(draw):
    """A fixture message with random cuts, splices, byte flips and repeated parts."""
    raw = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["cut", "insert", "flip", "repeat", "truncate"]))
        at = draw(st.integers(0, len(raw)))
        if kind == "cut":
            del raw[at:at + draw(st.integers(1, 200))]
        elif kind == "insert":
            raw[at:at] = draw(st.sampled_from(PIECES) | st.binary(max_size=40))
        elif kind == "flip" and raw:
            raw[min(at, len(raw) - 1)] = draw(st.integers(0, 255))
        elif kind == "repeat":
            raw[at:at] = bytes(raw[at:at + draw(st.integers(1, 300))]) * draw(st.integers(2, 20))
        else:
            raw = raw[:at]
    return bytes(raw)


def check(parsed):
    assert isinstance(parsed, ParsedMessage)
    assert parsed.classification in CLASSIFICATIONS
    if parsed.classification in ("empty", "unreadable", "auto_reply", "bounce", "bulk", "automated"):
        assert parsed.reason
    parsed.to_dict()   # serialisable parts only
    import json
    json.dumps(parsed.to_dict())


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4000))
def test_arbitrary_bytes(raw):
    """Any bytes at all give a ParsedMessage with a known classification."""
    check(parse_message(raw, SETTINGS))


@settings(max_examples=200, deadline=None)
@given(mutated_messages())
def test_mutated_real_messages(raw):
    """Real messages cut, spliced and corrupted still give a ParsedMessage with a classification."""
    check(parse_message(raw, SETTINGS))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=3000))
def test_arbitrary_text(text):
    """Any text, encoded as UTF-8, gives a classification."""
    check(parse_message(text.encode("utf-8", "surrogatepass"), SETTINGS))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(mutated_messages(), st.binary(max_size=2000)))
def test_every_stored_input_ends_with_a_status(database, config, raw):
    """Arbitrary and broken mail stored and processed ends done, duplicate, ignored or failed; never stuck."""
    from leadflow.store.models import InboundMessage

    config.intake.internal_domains = ["ourco.example"]
    stored = store_inbound("email", raw)
    if not stored.duplicate:
        process_inbound(stored.id, config)
    row = InboundMessage.get_by_id(stored.id)
    assert row.status in ("done", "duplicate", "ignored", "failed")
    assert row.failed_step != "parse", row.error
