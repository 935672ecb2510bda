"""The transports seam: the router's choice per URL and method, the fake transport, and what the engine accepts."""

from __future__ import annotations

import asyncio

import pytest

from offload.tasks import Task
from offload.transports import (
    AiohttpUpstream,
    FakeTransport,
    InvalidRequest,
    NativeTransport,
    TransportRouter,
    UnsupportedRequest,
    UpstreamReply,
    UpstreamUnreachable,
    json_reply,
    text_reply,
)

from conftest import EdgeFactory
from engines import engine_for


def named(name: str) -> FakeTransport:
    """A fake transport that answers with its own name (which transport a request went to)."""
    return FakeTransport(lambda base_url, task: text_reply(name))


@pytest.mark.parametrize(
    ("base_url", "method", "chosen"),
    [
        ("http://127.0.0.1:5001", "GET", "native"),
        ("http://edge.example:80", "POST", "native"),
        ("http://[::1]:5001", "delete", "native"),
        ("http://127.0.0.1:5001", "HEAD", "general"),
        ("http://127.0.0.1:5001", "head", "general"),
        ("https://edge.example", "GET", "general"),
        ("HTTPS://edge.example", "POST", "general"),
        ("http://", "GET", "general"),  # no host: the native transport would refuse it
    ],
)
async def test_the_router_chooses_by_scheme_and_method(base_url: str, method: str, chosen: str) -> None:
    native, general = named("native"), named("general")
    router = TransportRouter(native, general)
    assert router.transport_for(base_url, method) is {"native": native, "general": general}[chosen]
    reply = await router.request(base_url, Task("/", method=method), 1.0)
    assert reply.body.decode() == chosen
    assert len((native if chosen == "native" else general).requests) == 1


async def test_the_router_decides_once_per_base_url_and_fans_out() -> None:
    class Counting(FakeTransport):
        """Two idle connections pruned on every call."""

        def prune_idle(self) -> int:
            return 2

    native, general = Counting(lambda b, t: text_reply("n")), Counting(lambda b, t: text_reply("g"))
    router = TransportRouter(native, general)
    for _ in range(3):
        await router.request("http://a.test:1", Task("/"), 1.0)
        await router.request("https://b.test", Task("/"), 1.0)
    assert router._by_url == {"http://a.test:1": native, "https://b.test": general}
    assert router.prune_idle() == 4
    await router.close()
    assert native.closed and general.closed


async def test_the_native_transport_refuses_what_it_does_not_speak_without_sending() -> None:
    native = NativeTransport()
    with pytest.raises(UnsupportedRequest, match="plain http:// only"):
        await native.request("https://127.0.0.1:9", Task("/"), 1.0)
    with pytest.raises(UnsupportedRequest, match="HEAD"):
        await native.request("http://127.0.0.1:9", Task("/", method="head"), 1.0)
    assert isinstance(UnsupportedRequest("x"), InvalidRequest)  # a task that cannot be sent: never retried
    assert not native._idle and not native._busy
    await native.close()


async def test_the_fake_transport_answers_records_and_refuses() -> None:
    def handler(base_url: str, task: Task) -> UpstreamReply:
        if task.path == "/down":
            raise UpstreamUnreachable("refused", never_arrived=True)
        return json_reply({"path": task.path}, status=201)

    fake = FakeTransport(handler)
    reply = await fake.request("http://a.test:1", Task("/x"), 1.0)
    assert (reply.status, reply.content_type, reply.body) == (201, "application/json", b'{"path": "/x"}')
    with pytest.raises(UpstreamUnreachable) as caught:
        await fake.request("http://a.test:1", Task("/down"), 1.0)
    assert caught.value.never_arrived
    with pytest.raises(InvalidRequest):
        await fake.request("http://a.test:1", Task("/", headers={"X-Evil": "a\r\nb"}), 1.0)
    assert [task.path for task in fake.sent_to("http://a.test:1")] == ["/x", "/down"]
    assert fake.prune_idle() == 0


async def test_the_fake_transport_waits_times_out_and_sees_cancellations() -> None:
    release = asyncio.Event()

    async def handler(base_url: str, task: Task) -> UpstreamReply:
        await release.wait()
        return text_reply("late")

    fake = FakeTransport(handler)
    with pytest.raises(TimeoutError):
        await fake.request("http://a.test:1", Task("/"), 0.01)
    waiting = asyncio.create_task(fake.request("http://a.test:1", Task("/"), 5.0))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert len(fake.cancelled) == 1 and len(fake.requests) == 2
    release.set()
    assert (await fake.request("http://a.test:1", Task("/"), 1.0)).body == b"late"


async def test_the_engine_sends_with_a_given_transport_and_closes_it() -> None:
    fake = FakeTransport(lambda base_url, task: text_reply("from the fake"))
    async with engine_for([("a", "http://a.test:8001")], transport=fake) as engine:
        assert engine.client is fake
        result = await engine.offload("p", Task("/hello"))
        assert (result.server, result.data) == ("a", "from the fake")
        assert [sent.base_url for sent in fake.requests] == ["http://a.test:8001"]
    assert fake.closed


@pytest.mark.parametrize("upstream_client", ["native", "aiohttp"])
async def test_the_engine_builds_the_default_transport(edge: EdgeFactory, upstream_client: str) -> None:
    only = await edge("only")
    async with engine_for([("only", only.url)], upstream_client=upstream_client) as engine:
        client = engine.client
        if upstream_client == "native":
            assert isinstance(client, TransportRouter)
            assert isinstance(client.native, NativeTransport) and isinstance(client.general, AiohttpUpstream)
            assert client.transport_for(only.url, "GET") is client.native
        else:
            assert isinstance(client, AiohttpUpstream)
        assert (await engine.offload("p", Task("/hello"))).data == "world"
