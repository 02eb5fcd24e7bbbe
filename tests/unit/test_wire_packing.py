"""Commands packed for the lean wire (adapters/redis/wire.py) are the RESP that redis-py sends.

Arguments packed once (constants, one user's keys) must go out exactly as the same arguments
packed call by call, and reach redis-py's own commands (the cluster path) as plain values.
"""

from __future__ import annotations

from typing import Any

from redis.connection import Encoder, PythonRespSerializer

from vimbiso_state.adapters.redis.keys import KeySchema
from vimbiso_state.adapters.redis.wire import Packed, Script, flatten, mget, pack
from vimbiso_state.domain.phone import PhoneNumber

SCRIPT = Script("return 1")
KEYS = ["user:{263771234567}:state", "session:{263771234567}:data"]
ARGS: list[Any] = [b"0001764136245000", b"1", 300_000_000, 7, "text", b""]


def redis_py_packing(*parts: Any) -> bytes:
    serializer = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)
    return b"".join(serializer.pack(*parts))


def test_a_command_packs_as_redis_py_packs_it() -> None:
    assert pack(["EVALSHA", SCRIPT.sha, 2, *KEYS, *ARGS]) == redis_py_packing(
        "EVALSHA", SCRIPT.sha, 2, *KEYS, *ARGS
    )
    assert SCRIPT.evalsha(KEYS, ARGS) == redis_py_packing("EVALSHA", SCRIPT.sha, 2, *KEYS, *ARGS)
    assert mget(KEYS) == mget(Packed(KEYS)) == redis_py_packing("MGET", *KEYS)


def test_packed_arguments_go_out_as_the_same_arguments_would() -> None:
    plain = SCRIPT.evalsha(KEYS, ARGS)
    assert SCRIPT.evalsha(Packed(KEYS), ARGS) == plain
    assert SCRIPT.evalsha(KEYS, [ARGS[0], Packed(ARGS[1:4]), *ARGS[4:]]) == plain
    assert SCRIPT.evalsha(Packed(KEYS), [Packed(ARGS[:2]), Packed(ARGS[2:])]) == plain
    assert SCRIPT.eval(Packed(KEYS), [Packed(ARGS)]) == SCRIPT.eval(KEYS, ARGS)


def test_packed_arguments_flatten_to_plain_values_for_redis_py() -> None:
    assert flatten(Packed(KEYS)) == KEYS
    assert flatten([ARGS[0], Packed(ARGS[1:4]), *ARGS[4:]]) == ARGS
    assert len(Packed(KEYS)) == 2 and list(Packed(KEYS)) == KEYS


def test_a_users_packed_keys_are_its_conversation_keys() -> None:
    schema, phone = KeySchema(), PhoneNumber.parse("+263771234567")
    assert flatten(schema.conversation(phone)) == schema.for_user(phone).conversation
    other = PhoneNumber.parse("+263771234568")
    assert flatten(schema.conversation(other)) == schema.for_user(other).conversation

    assert flatten(schema.documents(phone)) == schema.for_user(phone).documents
    assert schema.for_user(phone).documents == schema.for_user(phone).conversation[:3]
