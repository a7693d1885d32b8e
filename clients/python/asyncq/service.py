"""The brokers behind one address (PROTOCOL.md 4.15): a service of shards,
found from the addresses a client is given. Each is asked HELLO with
`service`; WELCOME says its shard and lists every broker of its service,
which are asked in turn, until all are known. A broker before 2.2 is shard
0, alone. One address of a broker alone is a service of one shard, and
behaves as the client always did.

A shard may be a group of replicas (4.16): its followers answer 421 and
the session follows to the leader, so several addresses given of one
group are one shard (the leader's broker-id says so), and a replica that
does not answer is not an address given wrong. Each shard's Replicas are
shared by its sessions; .brokers follows its leader.

A service's shards may each be such a group: WELCOME's `groups` then lists
every shard's addresses (`brokers` only each group's first). A shard is
looked for at each address of its group in turn, so a first replica down
does not keep its shard from being found, nor, when none of them answers
yet, from being found later by its session in the background."""
from __future__ import annotations

import asyncio
import logging
import socket as stdsocket
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import zmq

from .protocol import (BrokerUnreachable, ShardConflict, endpoints, fnv1a32, same_place,
                       split_addresses)
from .security import Keys
from .session import Replicas, Session

log = logging.getLogger("asyncq")

FIRST_TRY = 1.5  # seconds: what a silent one of several addresses costs (_open_all)

Key = Union[bytes, str]


class Target(NamedTuple):
    """Somewhere a broker may be: address (for messages and `:PORT`
    entries), its endpoints, and the address given it came from (None for
    one a broker listed)."""
    address: str
    push: str
    router: str
    given: Optional[str]
    host: str  # the host part of address ("" for ipc://), for `:PORT` entries
    shard: Optional[int] = None  # the shard a broker's list places it at


class Broker(NamedTuple):
    """A broker of the service: its shard number, the address this client
    reaches it at, and its endpoints."""
    shard: int
    address: str
    push: str
    router: str


def _target(address: str, given: Optional[str]) -> Target:
    push, router = endpoints(address)
    host = "" if address.startswith("ipc://") else router[len("tcp://"):].rpartition(":")[0]
    return Target(address, push, router, given, host)


class Service:
    """The brokers a Queue uses, by shard number, once found (open()).
    count: the number of shards, for keys (the service list's length; the
    brokers found when they are alone). unreachable: addresses given that
    answered nothing and that no broker lists, with why."""

    def __init__(self, address: str, context: zmq.Context[Any], keys: Optional[Keys],
                 timeout: float) -> None:
        self.given = split_addresses(address)
        self._context, self._keys, self.timeout = context, keys, timeout
        self.brokers: Dict[int, Broker] = {}
        self.count = 0
        self.found = False
        self.unreachable: Dict[str, BrokerUnreachable] = {}
        self._order: List[int] = []  # shard numbers, sorted: where a key's hash lands
        self._listed = False  # the brokers listed their service (else each is alone)
        self.replicas: Dict[int, Replicas] = {}  # each shard's, shared by its sessions (4.16)
        # Each shard's addresses as WELCOME's `groups` lists them (4.16): a
        # group of replicas' (several), or a broker alone's; {} without it.
        self.groups: Dict[int, List[str]] = {}

    @property
    def sharded(self) -> bool:
        """More than one broker: the service's rules (4.15) apply."""
        return len(self.brokers) > 1

    def shard_for(self, key: Key) -> int:
        """The shard a put with this key goes to: fnv1a32(key) mod the number
        of shards (4.15); a str key is its UTF-8."""
        data = key.encode() if isinstance(key, str) else bytes(key)
        index = fnv1a32(data) % self.count
        return index if self._listed else self._order[index]

    def session(self, broker: Union[Broker, Target], client_id: str,
                hello_seq: Callable[[], int] = lambda: 0) -> Session:
        """A session with a broker found (at its shard's leader, as last
        seen), or with an address to try (its 421s without a leader named
        send it on to the other addresses given; one a broker listed as
        a shard that is a group of replicas is looked for at each of the
        group's addresses in turn)."""
        if isinstance(broker, Broker):
            replicas = self.replicas.get(broker.shard)
            return Session(self._context, broker.router, client_id, self._keys, hello_seq,
                           address=broker.address, shard=broker.shard, push=broker.push,
                           replicas=replicas)
        group = self.groups.get(broker.shard, []) if broker.shard is not None else []
        if len(group) > 1:
            candidates = Replicas([broker.address, *group], True)
        else:
            candidates = Replicas([broker.address, *self.given])
        return Session(self._context, broker.router, client_id, self._keys, hello_seq,
                       address=broker.address, push=broker.push, replicas=candidates)

    async def open(self, client_id: str,
                   hello_seq: Callable[[], int] = lambda: 0) -> Dict[int, Session]:
        """A session with every broker of the service, by shard: found the
        first time. A broker of the service that does not answer is down:
        its session says HELLO in the background until it does. Raises
        BrokerUnreachable (or a subclass) when no broker answers,
        ShardConflict when two say the same shard, BrokerError when one
        refuses the HELLO."""
        if not self.found:
            return await self._find(client_id, hello_seq)
        brokers = sorted(self.brokers.values())
        sessions = [self.session(broker, client_id, hello_seq) for broker in brokers]
        results = await self._open_all(sessions)
        failures = [result for result in results if result is not None]
        fatal = [error for error in failures if not isinstance(error, BrokerUnreachable)]
        if fatal or len(failures) == len(sessions):
            await _close_all(sessions, results)
            raise fatal[0] if fatal else self._none_answered(
                [(broker.address, error) for broker, error in zip(brokers, results) if error])
        opened: Dict[int, Session] = {}
        for broker, session, error in zip(brokers, sessions, results):
            if error is not None:
                log.warning("asyncq: the broker of shard %d is down (%s); trying again in the "
                            "background", broker.shard, error)
                session = self.session(broker, client_id, hello_seq)
                session.open_in_background()
            opened[broker.shard] = session
        return opened

    async def _open_all(self, sessions: List[Session]) -> List[Optional[Exception]]:
        """Opens the sessions at once; for each, None or why it failed. Of
        several, those still silent FIRST_TRY seconds on (a host cut off,
        or stopped) are given up on once another has answered, not waited
        for the whole timeout."""
        tasks = [asyncio.ensure_future(session.open(self.timeout)) for session in sessions]

        def answered() -> bool:
            return any(task.done() and not task.cancelled() and task.exception() is None
                       for task in tasks)

        try:
            if len(tasks) > 1 and self.timeout > FIRST_TRY:
                _, pending = await asyncio.wait(tasks, timeout=FIRST_TRY)
                while pending and not answered():
                    _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
            await asyncio.wait(tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        errors: List[Optional[Exception]] = []
        for session, task in zip(sessions, tasks):
            if task.cancelled():
                errors.append(BrokerUnreachable(
                    f"no answer from the broker at {session.address} within {FIRST_TRY:g} s, "
                    "while another answered"))
                continue
            error = task.exception()
            if error is not None and not isinstance(error, Exception):
                raise error  # cancelled
            errors.append(error)
        return errors

    def _none_answered(self, failures: Sequence[Tuple[str, Exception]]) -> Exception:
        if len(failures) == 1:
            return failures[0][1]  # one address: its own error, as ever
        return BrokerUnreachable("no broker of the service answered: " + "; ".join(
            f"{address}: {error}" for address, error in failures))

    async def _targets(self, given: str) -> List[Target]:
        """Where the address given may be: itself, or each address its host
        name resolves to (IPv4 and IPv6) when there are several. Raises
        BrokerUnreachable when the name does not resolve."""
        target = _target(given, given)
        if not target.router.startswith("tcp://"):
            return [target]
        host, _, port = target.router[len("tcp://"):].rpartition(":")
        try:
            found = await asyncio.get_running_loop().getaddrinfo(
                host.strip("[]"), int(port), type=stdsocket.SOCK_STREAM)
        except stdsocket.gaierror as error:
            raise BrokerUnreachable(f"cannot reach the broker at {given}: host {host!r} "
                                    f"does not resolve ({error.strerror})") from None
        addresses: List[str] = []
        for family, _, _, _, sockaddr in found:
            ip = str(sockaddr[0])
            text = f"[{ip}]" if family == stdsocket.AF_INET6 else ip
            if text not in addresses:
                addresses.append(text)
        if len(addresses) <= 1:
            return [target]
        first_port = int(port) - 1
        return [_target(f"{address}:{first_port}", given) for address in addresses]

    async def _find(self, client_id: str, hello_seq: Callable[[], int]) -> Dict[int, Session]:
        targets: List[Target] = []
        unresolved: List[Tuple[str, BrokerUnreachable]] = []
        for given in self.given:
            try:
                targets += await self._targets(given)
            except BrokerUnreachable as error:
                if len(self.given) == 1:
                    raise
                unresolved.append((given, error))
        reached: Dict[int, Tuple[Target, Session]] = {}
        listed: Dict[int, Target] = {}   # shard -> where a broker's list says it is
        size = 0                          # the service's size, as its lists say
        failed: List[Tuple[Target, BrokerUnreachable]] = []
        tried: List[Target] = []
        opened: List[Session] = []
        try:
            while targets:
                sessions = [self.session(target, client_id, hello_seq) for target in targets]
                results = await self._open_all(sessions)
                tried += targets
                for target, session, why in zip(targets, sessions, results):
                    if why is not None:
                        if not isinstance(why, BrokerUnreachable):
                            raise why  # a HELLO refused: a key, a limit
                        failed.append((target, why))
                        continue
                    opened.append(session)
                    welcome = session.welcome
                    assert welcome is not None
                    shard = welcome.shard or 0
                    if shard in reached:
                        other_target, other = reached[shard]
                        assert other.welcome is not None
                        if other.welcome.broker_id == welcome.broker_id and (
                                (target.given and target.given == other_target.given)
                                or welcome.replicas or other.replicas.replicated
                                or session.replicas.replicated):
                            # One name, several addresses, one broker (IPv4
                            # and IPv6), or replicas of one group led to
                            # its leader (4.16): the same broker, once. Its
                            # two HELLOs named one client id: the latter
                            # took the session over (4.2), so the one kept
                            # says HELLO again once the other is gone.
                            opened.remove(session)
                            await session.close(bye=False)
                            await other.renew(self.timeout)
                            continue
                        raise self._conflict(shard, other_target, other, target, session)
                    session.shard = shard
                    reached[shard] = (target, session)
                    size = max(size, len(welcome.brokers), len(welcome.groups))
                    for place, entries in enumerate(welcome.groups):
                        if place not in self.groups:
                            self.groups[place] = self._group(entries, target, place)
                    for place, entry in enumerate(welcome.brokers):
                        if place not in listed:
                            try:
                                listed[place] = self._place(entry, target)._replace(shard=place)
                            except ValueError:
                                log.warning("asyncq: the broker at %s lists %r as shard %d: "
                                            "not an address", target.address, entry, place)
                targets = [target for shard, target in sorted(listed.items())
                           if shard not in reached and target not in tried]
        except BaseException:
            await _close_all(opened, [None] * len(opened))
            raise
        if not reached:
            raise self._none_answered([*unresolved, *((target.address, why)
                                                      for target, why in failed)])
        sessions_by_shard = {shard: session for shard, (_, session) in reached.items()}
        for shard, (target, session) in reached.items():
            # Where the session is: the leader, for a group of replicas.
            self.brokers[shard] = Broker(shard, session.address, session.push_endpoint,
                                         session.endpoint)
            self._keep_replicas(shard, session)
        for shard, target in listed.items():
            if shard not in reached:
                cause = next((why for failure, why in failed if failure == target
                              or (failure.given and same_place(failure.address,
                                                                target.address))), None)
                addresses = self.groups.get(shard, [])
                log.warning("asyncq: shard %d of the service, at %s, does not answer (%s); "
                            "trying again in the background", shard,
                            "|".join(addresses) if len(addresses) > 1 else target.address,
                            cause)
                broker = Broker(shard, target.address, target.push, target.router)
                self.brokers[shard] = broker
                # A group's session asks each of its replicas in turn (4.16).
                self.replicas[shard] = Replicas([target.address, *addresses],
                                                len(addresses) > 1)
                self.replicas[shard].on_leader = self._leader_moved(shard)
                session = self.session(broker, client_id, hello_seq)
                session.open_in_background()
                sessions_by_shard[shard] = session
        for target, why in failed:
            if target.given is None or any(same_place(target.address, broker.address)
                                           for broker in self.brokers.values()):
                continue
            group = next((shard for shard, replicas in self.replicas.items()
                          if replicas.replicated and replicas.knows(target.address)), None)
            if group is None:
                group = next((shard for shard, addresses in self.groups.items()
                              if len(addresses) > 1 and any(
                                  same_place(target.address, address)
                                  for address in addresses)), None)
            if group is not None:
                # A replica of a group whose leader answered, or that the
                # service lists (4.16): down, or cut off, for now; the shard
                # is served, or looked for at its other replicas.
                log.info("asyncq: %s, a replica of shard %d, does not answer: %s",
                         target.address, group, why)
                continue
            if any(other.given == target.given for other, _ in reached.values()):
                # One of several addresses of one name: the others answered.
                log.info("asyncq: %s (an address of %s) does not answer: %s", target.address,
                         target.given, why)
                continue
            self.unreachable[target.address] = why
        for given, why in unresolved:
            self.unreachable[given] = why
        for why in self.unreachable.values():
            log.warning("asyncq: %s; serving the other brokers (%s)", why, ", ".join(
                broker.address for broker in sorted(self.brokers.values())))
        self.count = size or len(self.brokers)
        self._listed = size > 0
        self._order = sorted(self.brokers)
        self.found = True
        return sessions_by_shard

    def _keep_replicas(self, shard: int, session: Session) -> None:
        """The shard's replicas are those its session found: shared from now
        on by every session of the shard. A group's (4.16) are the leader's
        list (not the other addresses given, which a 421 without a leader
        may have sent it to); a broker alone's, its address."""
        found = session.replicas
        if found.replicated:
            replicas = Replicas(session.welcome.replicas if session.welcome else (), True)
            replicas.learn([session.address])
            replicas.learn(address for address in found.addresses
                           if address not in self.given or address == session.address)
        else:
            replicas = Replicas([session.address])
        replicas.leader = session.address if found.replicated else None
        replicas.on_leader = self._leader_moved(shard)
        session.replicas = replicas
        self.replicas[shard] = replicas

    def _leader_moved(self, shard: int) -> Callable[[str], None]:
        """What a shard's Replicas call when its leader moved: .brokers (and
        the sessions opened later) follow."""
        def moved(address: str) -> None:
            try:
                push, router = endpoints(address)
            except ValueError:
                return
            log.info("asyncq: shard %d is led from %s now", shard, address)
            self.brokers[shard] = Broker(shard, address, push, router)
        return moved

    def _group(self, entry: Sequence[str], by: Target, place: int) -> List[str]:
        """A shard's addresses as `groups` lists them (4.16), each as
        _place() reads it; those that are not addresses are left out."""
        addresses: List[str] = []
        for address in entry:
            try:
                addresses.append(self._place(address, by).address)
            except ValueError:
                log.warning("asyncq: the broker at %s lists %r in shard %d's group: not an "
                            "address", by.address, address, place)
        return addresses

    def _place(self, entry: str, by: Target) -> Target:
        """A broker's list entry (4.15): HOST:PORT, ipc://PATH, or :PORT on
        the host this client reached that broker at."""
        if entry.startswith(":") and by.host:
            entry = by.host + entry
        return _target(entry, None)

    def _conflict(self, shard: int, first: Target, one: Session, second: Target,
                  other: Session) -> ShardConflict:
        assert one.welcome is not None and other.welcome is not None
        why = ("the same broker given twice under two names"
               if one.welcome.broker_id == other.welcome.broker_id
               else "two brokers without their own --shard")
        return ShardConflict(f"two brokers say they are shard {shard}: {first.address} and "
                             f"{second.address} ({why}): their item ids would collide; give "
                             f"each broker of a service its own --shard")


async def _close_all(sessions: List[Session], errors: List[Optional[Exception]]) -> None:
    for session, error in zip(sessions, errors):
        if error is None:
            await session.close()
