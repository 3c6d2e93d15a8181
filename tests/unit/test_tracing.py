"""The tracing helpers with tracing off (the default): nothing is recorded, nothing leaks."""

from aragog.common import tracing


def test_off_by_default_and_bounded():
    assert tracing.setup("router", "") is False
    with tracing.tracer.start_as_current_span("x"):
        assert tracing.traceparent() == ""  # the no-op tracer makes no context to send
    assert tracing.parent("") is None
    assert tracing.parent("0" * 129) is None  # longer than any traceparent: ignored
    assert tracing.add_trace_id(None, "info", {"event": "e"}) == {"event": "e"}
    header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    ctx = tracing.parent(header)
    span = tracing.trace.get_current_span(ctx).get_span_context()
    assert format(span.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
