"""The stores this library is compared with, each used the way its bots use it, on the same
data (realistic.document): aiogram 3's RedisStorage through an FSMContext per message, and a
plain JSON GET/SET store (load, change, store), like the VimbisoPay bot's own.

Each offers ``log_in`` (the user's data as after their first messages), ``one`` (a realistic
message to the next user), ``append`` (one webhook that appends an entry to a list in the
user's data, for the lost-update count), ``log`` (that list) and ``pattern`` (its keys).
"""

from __future__ import annotations

import json
from typing import Any

import redis
import redis.asyncio
from aiogram.fsm.context import FSMContext
from aiogram.fsm.storage.base import StorageKey
from aiogram.fsm.storage.redis import RedisStorage
from harness import digits
from realistic import RoundRobin, change_document, document

TTL_S = 86_400  # both keep the user a day, as the library keeps critical data


class AiogramHandler(RoundRobin):
    """aiogram 3's RedisStorage as an aiogram handler uses it: per update, the FSM
    middleware builds an FSMContext and reads the state; the handler reads the data, sets the
    next state and updates the data (update_data reads and writes the data again)."""

    BOT_ID = 1

    def __init__(self, client: redis.asyncio.Redis, phones: list[str]) -> None:
        super().__init__(phones)
        self.storage = RedisStorage(client, state_ttl=TTL_S, data_ttl=TTL_S)

    def context(self, phone: str) -> FSMContext:
        user = int(digits(phone))
        return FSMContext(self.storage, StorageKey(self.BOT_ID, chat_id=user, user_id=user))

    @staticmethod
    def pattern(phone: str) -> str:
        return f"fsm:{digits(phone)}:{digits(phone)}:*"

    async def log_in(self, phone: str) -> None:
        data = document()
        stage = data.pop("stage")
        context = self.context(phone)
        await context.set_state(stage)
        await context.set_data(data)

    async def one(self) -> None:
        phone, _, k = self.next()
        context = self.context(phone)  # FSMContextMiddleware
        raw_state = await context.get_state()
        data = await context.get_data()  # the handler
        data["stage"] = raw_state
        stage = change_document(data, k)
        await context.set_state(stage)
        await context.update_data(
            option=data["option"], menu=data["menu"], context=data["context"], form=data["form"]
        )

    async def append(self, phone: str, entry: str) -> None:
        context = self.context(phone)
        await context.get_state()
        data = await context.get_data()
        log = [*data.get("log", []), entry]
        await context.set_state("handle_action_menu")
        await context.update_data(log=log)

    async def log(self, phone: str) -> list[str]:
        return list((await self.context(phone).get_data()).get("log", []))


class JsonStore(RoundRobin):
    """A plain JSON document per user: GET, change, SET with a TTL."""

    def __init__(self, client: redis.Redis, phones: list[str]) -> None:
        super().__init__(phones)
        self.client = client

    @staticmethod
    def key(phone: str) -> str:
        return f"json:{{{digits(phone)}}}:state"

    pattern = key

    def log_in(self, phone: str) -> None:
        self._store(phone, document())

    def one(self) -> None:
        phone, _, k = self.next()
        data = self._load(phone)
        change_document(data, k)
        self._store(phone, data)

    def append(self, phone: str, entry: str) -> None:
        data = self._load(phone)
        data.setdefault("log", []).append(entry)
        self._store(phone, data)

    def log(self, phone: str) -> list[str]:
        return list(self._load(phone).get("log", []))

    def _load(self, phone: str) -> dict[str, Any]:
        value = self.client.get(self.key(phone))
        return dict(json.loads(value)) if value else {}

    def _store(self, phone: str, data: dict[str, Any]) -> None:
        self.client.set(self.key(phone), json.dumps(data), ex=TTL_S)
