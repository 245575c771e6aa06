import dataclasses

import pytest
from pydantic import ValidationError

from shared.messages import (
    Answer,
    Call,
    CallReply,
    CallStats,
    CancelCall,
    ReplyKind,
    SessionEnded,
    SessionEvent,
    SubscriptionsChanged,
    decode_control,
    encode,
    read_reply,
)


def _fields(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def test_a_call_survives_its_stream_fields_unchanged() -> None:
    call = Call(
        call_id=b"7",
        replica=b"ingress-1",
        session=b"",
        principal=b"anonymous",
        server=b"k8s",
        method=b"tools/call",
        params=b'{"name":"get","arguments":{"n":1e400}}',
        deadline_ms=1_700_000_000_123,
        safe=False,
        key=b"~ingress-1/7",
    )
    assert Call.from_fields(_fields(call.fields())) == call


def test_a_call_carries_its_trace_context_and_target_and_reads_without_them_too() -> None:
    call = Call(
        call_id=b"7",
        replica=b"ingress-1",
        session=b"s",
        principal=b"anonymous",
        server=b"k8s",
        method=b"tools/call",
        params=b"{}",
        deadline_ms=1,
        safe=True,
        key=b"s 7",
        traceparent=b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        target=b"get",
    )
    fields = _fields(call.fields())
    assert Call.from_fields(fields) == call
    older = {k: v for k, v in fields.items() if k not in (b"traceparent", b"target")}  # from an ingress before them
    assert Call.from_fields(older) == dataclasses.replace(call, traceparent=b"", target=b"")


def test_a_final_reply_carries_what_the_worker_saw_of_the_call() -> None:
    for stats in (CallStats(1500, 42_000, True), CallStats(7), CallStats(0, 0, False)):
        reply = CallReply(b"7", ReplyKind.RESULT, b"{}", stats=stats)
        assert read_reply(_fields(reply.fields())) == reply
    assert read_reply(_fields(CallReply(b"7", ReplyKind.ERROR, b"{}").fields())) == CallReply(
        b"7", ReplyKind.ERROR, b"{}"
    )


def test_the_reply_stream_tells_a_call_s_reply_from_a_session_s_event() -> None:
    reply = CallReply(b"7", ReplyKind.REQUEST, b'{"method":"roots/list"}', b"worker-1/3")
    final = CallReply(b"7", ReplyKind.RESULT, b"{}")
    event = SessionEvent(b"abc", b'{"jsonrpc":"2.0","method":"notifications/resources/updated"}')
    assert read_reply(_fields(reply.fields())) == reply
    assert read_reply(_fields(final.fields())) == final and final.final and not reply.final
    assert read_reply(_fields(event.fields())) == event


def test_an_answer_keeps_who_answers() -> None:
    answer = Answer(b"worker-1/3", b"session", b'"result":{}')
    assert Answer.from_fields(_fields(answer.fields())) == answer


def test_control_messages_are_told_apart_by_their_type() -> None:
    for message in (CancelCall(key="s 1", reason="bye"), SessionEnded(session="s"), SubscriptionsChanged(server="k")):
        assert decode_control(_fields(encode(message))) == message
    with pytest.raises(ValidationError):
        decode_control({b"__data__": b'{"type":"cancel","key":"s 1"}'})
