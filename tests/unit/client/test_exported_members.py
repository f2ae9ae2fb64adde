"""nodeagent.client exports exactly what it defines for the components (httpx's
tests/test_exported_members.py): a name added to the package is either in __all__ or private."""

import types

import nodeagent.client as client
from nodeagent.client import interface


def test_all_public_members_are_exported_and_sorted() -> None:
    public = sorted(name for name, value in vars(client).items()
                    if not name.startswith("_") and not isinstance(value, types.ModuleType)
                    and name != "annotations")
    assert client.__all__ == public


def test_every_exported_name_resolves() -> None:
    for name in client.__all__:
        assert getattr(client, name) is not None, name


def test_the_rest_client_and_the_fake_satisfy_the_protocol() -> None:
    # Every verb of the protocol exists on both with the same parameters, in the same order.
    import inspect

    from tests.helpers.fake_client import FakeClient

    for impl in (client.Client, FakeClient):
        for name, member in vars(interface.ClientProtocol).items():
            if name.startswith("_") or not callable(member):
                continue
            want = list(inspect.signature(member).parameters)
            got = list(inspect.signature(getattr(impl, name)).parameters)
            assert got == want, (impl.__name__, name)
